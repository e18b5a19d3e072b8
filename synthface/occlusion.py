"""Per-vertex ambient occlusion of a model's mean shape, rendered once per renderer.

A vertex's occlusion is the cosine-weighted fraction of directions around its normal from which it
can be seen: the mean face is rendered (near-orthographically) from ``directions`` directions spread
evenly over the sphere, and each vertex is tested against each view's depth map as landmarks are.
Eye sockets, nostrils, the mouth's interior and the folds beside the nose come out dark. Computed
from the mean shape only: identities and expressions move the folds little, and a per-model table
costs nothing per sample. Works for every model the renderer can draw (the bundled one or a BFM).
"""

from __future__ import annotations

import math

import moderngl
import numpy as np

from .geometry import pose_to_camera, project, vertex_normals
from .model import MorphableModel
from .params import N_SH, POSE

DISTANCE_RADII = 20.0
"""Camera distance in units of the mesh's radius: near-orthographic views."""


def sphere_directions(n: int) -> np.ndarray:
    """(n, 3) unit vectors spread evenly over the sphere (Fibonacci lattice), deterministic."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def facing_poses(directions: np.ndarray, centre: np.ndarray, distance: float) -> np.ndarray:
    """(n, 6) poses whose camera looks at ``centre`` (model mm) from model-space ``directions`` (n, 3).

    With roll 0, ``R·F·d = (0, 0, -1)`` (d points at the camera) for yaw = asin(e_x) and
    pitch = atan2(-e_y, -e_z), where e = F·d = (d_x, -d_y, -d_z).
    """
    e = directions * np.array([1.0, -1.0, -1.0])
    pose = np.zeros((len(directions), 6))
    pose[:, POSE["yaw"]] = np.arcsin(np.clip(e[:, 0], -1.0, 1.0))
    pose[:, POSE["pitch"]] = np.arctan2(-e[:, 1], -e[:, 2])
    rot, _ = pose_to_camera(pose)
    pose[:, POSE["tx"]:POSE["tz"] + 1] = np.array([0.0, 0.0, distance]) - rot @ centre
    return pose


def vertex_occlusion(model: MorphableModel, ctx: moderngl.Context, *, directions: int = 64,
                     size: int = 192) -> np.ndarray:
    """(V,) float32 in [0, 1]: 1 = open to the whole hemisphere above the vertex, 0 = fully enclosed."""
    from .render import FaceRenderer, RenderSettings, landmark_visibility

    mean = model.mean_shape.astype(np.float64)
    centre = (mean.min(axis=0) + mean.max(axis=0)) / 2
    radius = float(np.linalg.norm(mean - centre, axis=1).max())
    distance = DISTANCE_RADII * radius
    dirs = sphere_directions(directions)
    b = len(dirs)
    focal = size * distance / (2.1 * radius)
    k = np.zeros((b, 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, :2, 2] = size / 2.0
    k[:, 2, 2] = 1.0
    light = np.zeros((b, N_SH, 3))
    light[:, 0] = 1.0
    params = {"identity": np.zeros((b, model.n_identity)), "expression": np.zeros((b, model.n_expression)),
              "albedo": np.zeros((b, model.n_albedo)), "pose": facing_poses(dirs, centre, distance),
              "light": light, "intrinsics": k}
    params = {key: v.astype(np.float32) for key, v in params.items()}
    settings = RenderSettings(image_size=size, faces_per_draw=min(b, 64), antialias="off")
    with FaceRenderer(model, settings, ctx=ctx) as renderer:
        out = renderer.render(params)
        verts, _, _ = renderer.geometry(params)
    xy = project(verts, params["intrinsics"])
    z = verts[..., 2]
    tolerance = 0.5 + 2.0 * z / focal  # two pixel footprints: steep surfaces change depth fast across a pixel
    seen = landmark_visibility(xy, z, out.depth, tolerance)  # (directions, V)
    normals = vertex_normals(mean[None].astype(np.float32), model.triangles)[0].astype(np.float64)
    weight = np.clip(normals @ dirs.T, 0.0, None)  # (V, directions)
    total = weight.sum(axis=1)
    open_ = (weight * seen.T).sum(axis=1) / np.maximum(total, 1e-12)
    return np.where(total > 0, open_, 1.0).astype(np.float32)
