"""Where clothes sit on a model: per-vertex coordinates the head shader dresses the bust with.

The bundled model reaches below the neck to the shoulders (its ``clothes`` region). Each vertex there
and on the neck carries its distance below the neck's base (mm; negative up the neck) and a weight
that is 1 at the front centre of the chest; each sample's ``params/clothes`` puts its neckline at
``neckline_mm`` + ``v_neck_mm`` × that weight and draws cloth below it (``render_shaders/face.frag``).
Models without a bust (the BFM files, format 1's face) get no clothes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .model import SEGMENTATION_CLASSES, MorphableModel

NO_COLLAR = -1000.0
"""Collar depth of vertices clothes never cover (the head above the neck)."""
V_HALF_WIDTH_MM = 70.0
"""A V neck's depth falls from its full value at the chest's midline to 0 this far to each side."""


def collar_fields(model: MorphableModel) -> np.ndarray:
    """(V, 2) float32 per vertex of the mean shape: depth below the neck's base (mm: distance to the
    nearest neck vertex on the bust, minus the distance to the nearest bust vertex on the neck;
    :data:`NO_COLLAR` elsewhere) and the V-neck weight in [0, 1] (front of the chest only)."""
    v = model.mean_shape.astype(np.float64)
    out = np.zeros((len(v), 2), np.float32)
    out[:, 0] = NO_COLLAR
    clothes = SEGMENTATION_CLASSES.index("clothes")
    if model.regions is None or not (model.regions == clothes).any():
        return out
    bust = model.regions == clothes
    neck = model.regions == SEGMENTATION_CLASSES.index("neck")
    out[bust, 0] = cKDTree(v[neck]).query(v[bust])[0]
    out[neck, 0] = -cKDTree(v[bust]).query(v[neck])[0]
    centre_x = v[neck, 0].mean()
    front = (v[:, 2] > v[neck, 2].mean()) & bust
    out[:, 1] = np.clip(1.0 - np.abs(v[:, 0] - centre_x) / V_HALF_WIDTH_MM, 0.0, 1.0) * front
    return out
