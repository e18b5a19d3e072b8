"""Where hair can grow on a model: per-vertex distances the hair shader turns into a hairline.

The renderer draws hair as a shell over the scalp (``render_shaders/face.*``, ``hair_pass``): each
vertex carries its distance along the head from the face/scalp border (positive on the scalp,
negative off it), and each sample's ``params/hair`` moves the hairline by an offset (plus a
recession at the temples), sets the shell's thickness (tapered to the hairline) and its colour.
Models without per-vertex ``regions`` (the BFM files) have no scalp and get no hair.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .model import SEGMENTATION_CLASSES, MorphableModel

NO_HAIR = -1000.0
"""Hairline distance of vertices hair never covers (ears, eyes, mouth, lips, nose)."""
TEMPLE_MM = (20.0, 55.0)
"""The temple weight rises from 0 to 1 between these distances from the midline (front of the head)."""


def hair_fields(model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """(V,) float32 distance (mm) from the face/scalp border on the mean shape, and (V,) temple weight in [0, 1]."""
    v = model.mean_shape.astype(np.float64)
    if model.regions is None or not (model.regions == SEGMENTATION_CLASSES.index("scalp")).any():
        return np.full(len(v), NO_HAIR, np.float32), np.zeros(len(v), np.float32)
    scalp = model.regions == SEGMENTATION_CLASSES.index("scalp")
    can = np.isin(model.regions, [SEGMENTATION_CLASSES.index(c) for c in ("scalp", "face", "neck", "brows")])
    distance = np.full(len(v), NO_HAIR)
    distance[scalp] = cKDTree(v[~scalp & can]).query(v[scalp])[0]
    off = can & ~scalp
    distance[off] = -cKDTree(v[scalp]).query(v[off])[0]
    lo, hi = TEMPLE_MM
    centre_x = v[model.face_region, 0].mean()
    side = np.clip((np.abs(v[:, 0] - centre_x) - lo) / (hi - lo), 0.0, 1.0)
    front = np.clip(v[:, 2] / 40.0, 0.0, 1.0)  # recession is a thing of the front hairline
    return distance.astype(np.float32), (side * front).astype(np.float32)
