"""Basel Face Model 2017 and 2019 (statismo ``.h5``; both share the layout).

Each of ``shape``, ``expression`` and (optional) ``color`` holds
``model/{mean (3N,), pcaBasis (3N, K) orthonormal, pcaVariance (K,)}``;
``shape/representer/cells`` (3, T) holds 0-based triangles. Units are mm and
colours [0, 1] already. The expression mean is an offset, added to the shape
mean so that zero coefficients give the mean face. A file without a ``color``
group (e.g. a shape-only export) gets a uniform 0.5 grey albedo and no albedo
components rather than an error. The file's named landmarks
(``metadata/landmarks/json``) are not the ibug-68 set, so none are read: pass
``--landmarks``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..model import MorphableModel
from . import _common as c

FORMAT = "bfm2017"
HINT = "is this a BFM2017/BFM2019 statismo .h5 model (e.g. model2017-1_bfm_nomouth.h5), complete?"
WHAT = "a BFM2017/2019 statismo HDF5 file"
GREY = 0.5
"""Albedo of a file without a ``color`` model."""


def _dataset(f, key: str, path: Path) -> np.ndarray:
    """Read one dataset into memory; missing keys, groups in its place and read errors all name the file."""
    import h5py

    with c.reading(path, WHAT):
        node = c.require(f, key, path, HINT)
        if not isinstance(node, h5py.Dataset):
            raise c.error(path, f"{key!r} is a {type(node).__name__}, expected a dataset", HINT)
        return node[()]


def _pca(f, group: str, n_vertices: int | None, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``group``'s mean (3V,), std-scaled basis (K, V, 3) float32 and std (K,), sizes checked."""
    name = f"{group}/model/mean"
    mean = c.vector(_dataset(f, name, path), name, None if n_vertices is None else 3 * n_vertices, path, HINT)
    if mean.shape[0] % 3:
        raise c.error(path, f"{name!r} has {mean.shape[0]} values, not a multiple of 3 (x, y, z per vertex)",
                      HINT)
    name = f"{group}/model/pcaVariance"
    variance = c.vector(_dataset(f, name, path), name, None, path, HINT)
    if (variance < 0).any():
        raise c.error(path, f"{name!r} has negative variances", HINT)
    std = np.sqrt(variance.astype(np.float64))
    name = f"{group}/model/pcaBasis"
    basis = c.basis(_dataset(f, name, path), std, name, mean.shape[0] // 3, path, HINT, len(std))
    return mean, basis, std


def _version(f, path: Path) -> str | None:
    """The statismo format version (e.g. ``0.9``; not the BFM year), if recorded."""
    try:
        parts = [np.asarray(_dataset(f, f"version/{k}Version", path)).reshape(-1) for k in ("major", "minor")]
    except ModelFileError:
        return None
    if not all(p.size == 1 and p.dtype.kind in "iu" for p in parts):
        return None
    return ".".join(str(int(p[0])) for p in parts)


def load(path: Path, *, sha256: str) -> MorphableModel:
    """Read a BFM2017/2019 statismo file: basis = pcaBasis·sqrt(pcaVariance) so coefficients are N(0, 1)."""
    import h5py

    try:  # registers extra HDF5 compression filters, should a user have re-saved the file with one
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass

    with c.reading(path, WHAT):
        f = h5py.File(path, "r")
    with f:
        shape_mu, identity_basis, identity_std = _pca(f, "shape", None, path)
        n_vertices = shape_mu.shape[0] // 3
        expr_mu, expression_basis, _ = _pca(f, "expression", n_vertices, path)
        mean_shape = c.vertices(shape_mu.astype(np.float64) + expr_mu, "shape/model/mean", 1.0, path, HINT)
        with c.reading(path, WHAT):
            has_colour = "color" in f
        if has_colour:
            colour_mu, albedo_basis, _ = _pca(f, "color", n_vertices, path)
            albedo_mean = c.vertices(colour_mu, "color/model/mean", 1.0, path, HINT)
        else:
            albedo_mean = np.full((n_vertices, 3), GREY, np.float32)
            albedo_basis = np.zeros((0, n_vertices, 3), np.float32)
        cells = c.numeric(_dataset(f, "shape/representer/cells", path), "shape/representer/cells",
                          (3, None), path, HINT)
        tris = c.triangles(cells.T, "shape/representer/cells", n_vertices, 0, path, HINT)
        version = _version(f, path)
    return c.pca_model(
        name=path.stem, path=path, sha256=sha256, fmt=FORMAT, mean_shape=mean_shape,
        identity_basis=identity_basis, identity_std=identity_std, triangles=tris, albedo_mean=albedo_mean,
        albedo_basis=albedo_basis, expression_basis=expression_basis,
        metadata={"layout": "statismo HDF5 (BFM2017 / BFM2019)", "statismo_version": version, "file_units": "mm",
                  "has_colour_model": has_colour, "expression_mean": "added to the shape mean",
                  "landmarks": "none read (the file's named landmarks are not ibug-68); pass an ibug-68 file"},
    )
