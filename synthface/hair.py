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

from .geometry import vertex_normals
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


NO_BROW = -10.0
"""Brow coordinate ``s`` of vertices no brow reaches."""
NO_BROW_T = 1000.0
"""Brow coordinate ``t`` (mm) of those vertices."""
BROW_REACH_MM = 30.0
"""Vertices farther than this from a brow's landmark line get :data:`NO_BROW`."""
BROW_INNER_X = 0.85
"""Where a drawn brow begins: its landmark line is cut at this fraction of the inner eye corner's distance
from the nose bridge. Why: the bundled model's ibug 21/22 sit 7 mm from the midline (brows 13 mm apart,
meeting over the nose in a frown); in photos a brow's head sits over the inner eye corner."""


def _brow_line(lm: np.ndarray, inner: int, tail: int, corner: int) -> np.ndarray:
    """(M, 3) a brow's drawn line, inner end first: ibug ``inner`` … ``tail``, its inner segment cut where
    it crosses :data:`BROW_INNER_X` × the eye ``corner``'s distance from the nose bridge (ibug 27)."""
    step = 1 if tail > inner else -1
    line = lm[inner:tail + step:step].copy()
    centre_x = lm[27, 0]
    x_cut = centre_x + BROW_INNER_X * (lm[corner, 0] - centre_x)
    a, b = line[0], line[1]
    f = np.clip((x_cut - a[0]) / (b[0] - a[0]), 0.0, 0.9)  # only ever shortens the first segment
    line[0] = a + f * (b - a)
    line[0, 1] = b[1]  # level with the next point: a brow's head, not a slope down to the nose
    return line


def _polyline_coordinates(p: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) arc-length position (0 at ``line[0]``, 1 at its end; extrapolated past both ends) and signed
    distance (+ = above: larger y) of 2-D points ``p`` (N, 2) from the polyline (M, 2), a brow's line."""
    a, b = line[:-1], line[1:]  # (S, 2) segments
    d = b - a
    length = np.linalg.norm(d, axis=1)
    t = np.einsum("nsk,sk->ns", p[:, None] - a[None], d) / length**2  # (N, S)
    first, last = np.zeros_like(t, bool), np.zeros_like(t, bool)
    first[:, 0], last[:, -1] = True, True
    t = np.clip(t, np.where(first, -np.inf, 0.0), np.where(last, np.inf, 1.0))  # the ends extend the line
    foot = a[None] + t[..., None] * d[None]
    dist = np.linalg.norm(p[:, None] - foot, axis=2)
    seg = dist.argmin(axis=1)
    rows = np.arange(len(p))
    start = np.concatenate([[0.0], np.cumsum(length)])[seg]
    s = (start + t[rows, seg] * length[seg]) / length.sum()
    rel = p - a[seg]
    side = np.sign(d[seg, 0] * rel[:, 1] - d[seg, 1] * rel[:, 0]) * np.sign(d[seg, 0])  # left of +x travel: up
    return s, side * dist[rows, seg]


def face_hair_fields(model: MorphableModel) -> np.ndarray:
    """(V, 4) float32 per-vertex coordinates the shader draws brows and stubble with (mean shape, mm):

    * ``s``: position along the nearer brow's landmark line, 0 at its inner end, 1 at its tail
      (:data:`NO_BROW` away from the brows, off the front of the face, or on models without them);
    * ``t``: height above that line (mm; ibug's brow points follow the brow's upper edge; ±:data:`NO_BROW_T`
      where ``s`` is :data:`NO_BROW`, on the side of the nearer line the vertex lies: a triangle from a
      vertex below the brow to one without stays below it);
    * ``beard``: where stubble may grow, 0 … 1 (soft edges; 0 on lips, eyes, nose, ears, scalp);
    * ``height``: on the lower face, from the chin's underside (0) to the nose base (1), tilted up
      towards the sideburns; ``params/facial_hair``'s ``beard_reach`` cuts it.

    Models without ``regions`` or landmarks (BFM files, whose albedo has its own brows) get no brows or stubble.
    """
    v = model.mean_shape.astype(np.float64)
    out = np.zeros((len(v), 4), np.float32)
    out[:, 0] = NO_BROW
    if model.regions is None or model.landmark_indices is None:
        return out
    lm = v[model.landmark_indices]
    facing = vertex_normals(v[None], model.triangles)[0, :, 2] > 0.2
    cls = {c: model.regions == SEGMENTATION_CLASSES.index(c) for c in SEGMENTATION_CLASSES}
    centre_x = lm[27, 0]  # the nose bridge
    lines = (_brow_line(lm, 21, 17, 39), _brow_line(lm, 22, 26, 42))  # inner end to tail
    coordinates = [_polyline_coordinates(v[:, :2], line[:, :2]) for line in lines]
    t_nearer = np.where(np.abs(coordinates[0][1]) <= np.abs(coordinates[1][1]), coordinates[0][1], coordinates[1][1])
    out[:, 1] = np.where(t_nearer >= 0, NO_BROW_T, -NO_BROW_T)
    for line, (s, t) in zip(lines, coordinates, strict=True):
        near = facing & (cls["face"] | cls["brows"]) & (np.abs(t) < BROW_REACH_MM)
        near &= np.abs(v[:, 2] - line[:, 2].mean()) < 30.0  # the brow, not a surface behind it
        near &= (v[:, 0] - centre_x) * np.sign(line[-1, 0] - centre_x) > -2.0  # this brow's side of the nose
        out[near, 0], out[near, 1] = s[near], t[near]
    chin, nose_base = lm[8, 1], lm[33, 1]
    height = (v[:, 1] - chin) / (nose_base - chin)
    half_jaw = np.abs(lm[0, 0] - lm[16, 0]) / 2.0
    height -= 0.35 * np.clip(np.abs(v[:, 0] - centre_x) / half_jaw, 0.0, 1.0)
    skin = cls["face"] | cls["neck"]
    under_chin = np.clip(1.0 - (chin - v[:, 1] - 25.0) / 15.0, 0.0, 1.0)  # fades out down the neck
    forward = np.clip((v[:, 2] - (lm[0, 2] + lm[16, 2]) / 2.0 + 15.0) / 15.0, 0.0, 1.0)  # not behind the jaw hinge
    lips = cKDTree(v[cls["lips"]]).query(v)[0] if cls["lips"].any() else np.full(len(v), np.inf)
    off_lips = np.clip((lips - 2.0) / 4.0, 0.0, 1.0)
    out[:, 2] = skin * under_chin * forward * off_lips * (v[:, 1] < nose_base - 2.0)
    out[:, 3] = height
    return out
