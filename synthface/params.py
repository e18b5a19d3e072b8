"""The per-sample parameter layout, defined once by name.

A parameter batch is a ``dict[str, array]`` whose keys, shapes and dtypes are
those of :func:`param_layout`; it is exactly what a shard stores under the
listed HDF5 paths, so sampler, geometry, shards and trainer share one layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import MorphableModel

POSE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "tz")
"""``params/pose`` columns: angles in radians, translation in mm (model → camera)."""
POSE = {name: i for i, name in enumerate(POSE_FIELDS)}
ANGLES = slice(POSE["yaw"], POSE["roll"] + 1)
TRANSLATION = slice(POSE["tx"], POSE["tz"] + 1)

N_SH = 9
"""Second-order spherical harmonics: 9 coefficients per colour channel (see :mod:`synthface.shading`)."""


@dataclass(frozen=True)
class ParamField:
    """One entry of a parameter batch: per-sample shape, dtype, and where a shard stores it."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    shard_path: str
    doc: str


def param_layout(model: MorphableModel) -> dict[str, ParamField]:
    """Every key of a parameter batch for ``model``, in storage order."""
    f32 = np.dtype(np.float32)
    fields = [
        ParamField("identity", (model.n_identity,), f32, "params/identity", "identity coefficients, N(0,1)"),
        ParamField("expression", (model.n_expression,), f32, "params/expression",
                   "expression coefficients: N(0,1) (pca) or weights in [0,1] (blendshape)"),
        ParamField("albedo", (model.n_albedo,), f32, "params/albedo", "albedo coefficients, N(0,1)"),
        ParamField("pose", (len(POSE_FIELDS),), f32, "params/pose",
                   "yaw, pitch, roll (rad), tx, ty, tz (mm): model → camera"),
        ParamField("light", (N_SH, 3), f32, "params/light", "SH lighting, 9 coefficients × RGB"),
        ParamField("background", (3,), f32, "params/background", "background colour, linear RGB in [0,1]"),
        ParamField("intrinsics", (3, 3), f32, "camera/intrinsics",
                   "pinhole K in pixels, origin at the top-left pixel's corner"),
        ParamField("index", (), np.dtype(np.int64), "index", "global sample index"),
    ]
    return {f.key: f for f in fields}
