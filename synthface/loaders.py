"""Find, detect and load a morphable model: the bundled default or a file the user owns.

Each supported format is one module in :mod:`synthface.model_formats` with a
``load(path, sha256=...)`` function; :data:`FORMATS` is the registry the CLI
and the detector read from.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .model import N_LANDMARKS, MorphableModel, read_native
from .model_formats import bfm2009, bfm2017, deep3d
from .resources import file_sha256, resource_dir

DEFAULT_MODEL_FILE = "synthface_default.npz"

Loader = Callable[..., MorphableModel]


def _load_native(path: Path, *, sha256: str) -> MorphableModel:
    return read_native(path, sha256=sha256, source=str(path))


FORMATS: dict[str, Loader] = {
    "synthface": _load_native,
    "bfm2009": bfm2009.load,
    "bfm2017": bfm2017.load,
    "deep3d": deep3d.load,
}
"""Format name → loader. ``bfm2017`` also reads BFM2019 (same statismo layout)."""


def assets_dir() -> Path:
    """The ``bfm_assets`` folder: inside the installed package, or at the repository root."""
    return resource_dir("bfm_assets", DEFAULT_MODEL_FILE)


def detect_format(path: Path) -> str:
    """Name the format of a model file from its content (not only its suffix)."""
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"PK"):
        return "synthface"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "bfm2017"
    if head.startswith(b"MATLAB"):
        import scipy.io

        if head.startswith(b"MATLAB 7.3"):
            raise ModelFileError(f"{path}: MATLAB v7.3 files are not supported; re-save it in MATLAB with "
                                 "save(..., '-v7')")
        try:
            names = {name for name, _, _ in scipy.io.whosmat(str(path))}
        except Exception as exc:  # scipy raises assorted errors on broken headers
            raise ModelFileError(f"{path}: unreadable MATLAB file ({exc})") from exc
        if "shapeMU" in names:
            return "bfm2009"
        if "meanshape" in names:
            return "deep3d"
        raise ModelFileError(f"{path}: MATLAB file with neither 'shapeMU' (BFM2009) nor 'meanshape' "
                             f"(Deep3DFaceRecon BFM_model_front.mat); found {sorted(names)[:8]}")
    raise ModelFileError(f"{path}: not a morphable-model file (expected a synthface .npz, a BFM2009/"
                         "Deep3DFaceRecon .mat or a BFM2017/2019 .h5)")


def read_landmark_file(path: Path, n_vertices: int) -> np.ndarray:
    """68 ibug vertex indices, 0-based, from JSON (a list, or ``{"ibug68": [...]}``) or whitespace text."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read landmark file ({exc.strerror})") from exc
    try:
        data = json.loads(text)
        values = data["ibug68"] if isinstance(data, dict) else data
    except (json.JSONDecodeError, KeyError, TypeError):
        values = text.split()
    try:
        idx = np.asarray(values, dtype=np.int64).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: landmark file must hold {N_LANDMARKS} integers") from exc
    if idx.shape != (N_LANDMARKS,) or idx.min() < 0 or idx.max() >= n_vertices:
        raise ModelFileError(f"{path}: need {N_LANDMARKS} 0-based vertex indices in [0, {n_vertices}), "
                             f"got {idx.size} in [{idx.min() if idx.size else '-'}, "
                             f"{idx.max() if idx.size else '-'}]")
    return idx


def load_model(path: str | Path | None = None, *, landmarks: str | Path | None = None,
               format: str | None = None) -> MorphableModel:
    """Load the bundled default model (``path=None``) or a user's model file.

    ``format`` overrides detection (a key of :data:`FORMATS`); ``landmarks``
    names a file of 68 ibug vertex indices (0-based) for models that lack them
    (BFM2009) or to replace theirs.
    """
    p = assets_dir() / DEFAULT_MODEL_FILE if path is None else Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"{p}: model file not found; check the --model path")
    if not p.is_file():
        raise ModelFileError(f"{p}: is not a file; pass the model file itself to --model")
    try:
        fmt = format or detect_format(p)
        if fmt not in FORMATS:
            raise ModelFileError(f"unknown model format {fmt!r}; choose one of {', '.join(FORMATS)}")
        model = FORMATS[fmt](p, sha256=file_sha256(p))
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read model file ({exc.strerror or exc})") from exc
    if path is None:
        model = dataclasses.replace(model, source="bundled")
    if landmarks is not None:
        lm = read_landmark_file(Path(landmarks), model.n_vertices)
        model = dataclasses.replace(model, landmark_indices=lm)
    return model
