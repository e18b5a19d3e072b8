"""``python -m synthface`` runs the ``synthface`` command."""

from .cli import main

main()
