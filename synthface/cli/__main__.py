"""``python -m synthface.cli`` runs the ``synthface`` command."""

from . import main

main()
