"""Basel Face Model 2009 (``01_MorphableModel.mat``, MATLAB v5).

The file stores micrometres, orthonormal PCA columns with their standard
deviations beside them (``shapeEV``, ``texEV``), colours in 0–255 and 1-based
triangles (``tl``). It has no expression model and no landmarks: users pass an
ibug-68 landmark file (``--landmarks``), or use the Deep3DFaceRecon variant.
"""

from __future__ import annotations

from pathlib import Path

from ..model import MorphableModel
from . import _common as c

FORMAT = "bfm2009"
HINT = "is this the BFM2009 01_MorphableModel.mat, complete and unmodified?"
UM_TO_MM = 1e-3
KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")


def _pca(data: dict, prefix: str, n_vertices: int | None, scale: float, path: Path):
    """Mean (V, 3) and std-scaled basis (K, V, 3) of ``<prefix>MU/PC/EV``, times ``scale``; also EV."""
    mu = c.vector(c.require(data, f"{prefix}MU", path, HINT), f"{prefix}MU",
                  None if n_vertices is None else 3 * n_vertices, path, HINT)
    mean = c.vertices(mu, f"{prefix}MU", scale, path, HINT)
    ev = c.vector(c.require(data, f"{prefix}EV", path, HINT), f"{prefix}EV", None, path, HINT)
    if (ev < 0).any():
        raise c.error(path, f"'{prefix}EV' has negative standard deviations", HINT)
    pc = c.require(data, f"{prefix}PC", path, HINT)
    data.pop(f"{prefix}PC")  # so the file's copy (~130 MB) is freed once its float32 basis exists
    return mean, c.basis(pc, ev * scale, f"{prefix}PC", len(mean), path, HINT, len(ev)), ev


def load(path: Path, *, sha256: str) -> MorphableModel:
    """Read BFM2009: µm → mm, basis = PC·EV (coefficients N(0, 1)), colour /255, tl 1-based → 0-based."""
    import scipy.io

    with c.reading(path, "a BFM2009 MATLAB file"):
        data = scipy.io.loadmat(str(path), variable_names=KEYS)
    mean_shape, identity_basis, shape_ev = _pca(data, "shape", None, UM_TO_MM, path)
    n_vertices = len(mean_shape)
    albedo_mean, albedo_basis, _ = _pca(data, "tex", n_vertices, 1.0 / 255.0, path)
    tris = c.triangles(c.require(data, "tl", path, HINT), "tl", n_vertices, 1, path, HINT)
    return c.pca_model(
        name="BFM2009", path=path, sha256=sha256, fmt=FORMAT, mean_shape=mean_shape,
        identity_basis=identity_basis, identity_std=shape_ev * UM_TO_MM, triangles=tris,
        albedo_mean=albedo_mean, albedo_basis=albedo_basis,
        metadata={"file_units": "micrometres (converted to mm)", "colour_range_in_file": "0-255 (divided by 255)",
                  "landmarks": "none in the file; pass an ibug-68 landmark file"},
    )
