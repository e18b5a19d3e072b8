"""Locate the data folders that ship with the wheel (``bfm_assets``, ``render_shaders``).

In an installed wheel they live inside the package (``synthface/bfm_assets``);
in a source checkout (editable install) they are at the repository root.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import SynthfaceError

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str, must_contain: str) -> Path:
    """The folder ``name`` that holds ``must_contain``, or a SynthfaceError saying how to repair."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if (candidate / must_contain).is_file():
            return candidate
    raise SynthfaceError(f"{name}/{must_contain} is not installed beside {_PACKAGE}; "
                         "reinstall synthface (pip install --force-reinstall synthface)")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
