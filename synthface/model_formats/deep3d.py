"""Deep3DFaceRecon's ``BFM_model_front.mat``: BFM2009 cropped to the front of the face, plus expressions.

Deep3DFaceRecon's ``transferBFM09`` wrote it in decimetres (micrometres / 1e5)
with bases already multiplied by their standard deviations (80 identity and 80
texture components from BFM2009, 64 expression components from FaceWarehouse),
colours in 0–255, and 1-based ``tri`` and ``keypoints`` (ibug-68 vertex
indices). Like Deep3DFaceRecon (``ParametricFaceModel(recenter=True)``), the
mean shape is re-centred on its vertex centroid, so coefficients and poses
estimated with it carry over; the offset removed is kept in the metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..model import N_LANDMARKS, MorphableModel
from . import _common as c

FORMAT = "deep3d"
HINT = "is this Deep3DFaceRecon's BFM/BFM_model_front.mat, complete and unmodified?"
WHAT = "a Deep3DFaceRecon BFM_model_front.mat"
DM_TO_MM = 100.0
KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")


def _basis(data: dict, key: str, n_vertices: int, scale: float, path: Path) -> np.ndarray:
    """``data[key]`` (3V, K), already std-scaled → (K, V, 3) float32 × ``scale``; drops the file's copy."""
    columns = c.require(data, key, path, HINT)
    del data[key]
    return c.basis(columns, scale, key, n_vertices, path, HINT)


def load(path: Path, *, sha256: str) -> MorphableModel:
    """Read BFM_model_front.mat: dm → mm (×100), colour /255, 1-based tri/keypoints → 0-based, re-centred."""
    import scipy.io

    with c.reading(path, WHAT):
        data = scipy.io.loadmat(str(path), variable_names=KEYS)
    flat = c.vector(c.require(data, "meanshape", path, HINT), "meanshape", None, path, HINT)
    mean_file = c.vertices(flat, "meanshape", DM_TO_MM, path, HINT)
    n_vertices = len(mean_file)
    centre = mean_file.mean(axis=0, dtype=np.float64)
    mean_shape = (mean_file - centre).astype(np.float32)

    identity_basis = _basis(data, "idBase", n_vertices, DM_TO_MM, path)
    # The columns are PCA directions times their std, so each column's norm is that std (over the
    # front-face vertices this file keeps, hence a little below BFM2009's full-head shapeEV).
    identity_std = np.sqrt(np.einsum("kvc,kvc->k", identity_basis, identity_basis, dtype=np.float64))
    expression_basis = _basis(data, "exBase", n_vertices, DM_TO_MM, path)
    tex = c.vector(c.require(data, "meantex", path, HINT), "meantex", 3 * n_vertices, path, HINT)
    albedo_mean = c.vertices(tex, "meantex", 1.0 / 255.0, path, HINT)
    albedo_basis = _basis(data, "texBase", n_vertices, 1.0 / 255.0, path)

    tris = c.triangles(c.require(data, "tri", path, HINT), "tri", n_vertices, 1, path, HINT)
    keypoints = c.vector(c.require(data, "keypoints", path, HINT), "keypoints", N_LANDMARKS, path, HINT)
    landmarks = c.indices(keypoints, "keypoints", (N_LANDMARKS,), n_vertices, 1, path, HINT)
    return c.pca_model(
        name="Deep3DFaceRecon-BFM_front", path=path, sha256=sha256, fmt=FORMAT, mean_shape=mean_shape,
        identity_basis=identity_basis, identity_std=identity_std, triangles=tris, albedo_mean=albedo_mean,
        albedo_basis=albedo_basis, expression_basis=expression_basis, landmarks=landmarks,
        metadata={"file_units": "decimetres (converted to mm)", "colour_range_in_file": "0-255 (divided by 255)",
                  "recentred_by_mm": [round(float(x), 6) for x in centre],
                  "identity_std": "norm of each std-scaled idBase column over this file's vertices",
                  "landmarks": "ibug-68 from 'keypoints' (1-based in the file)"},
    )
