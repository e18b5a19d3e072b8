"""The per-sample parameter layout, defined once by name.

A parameter batch is a ``dict[str, array]`` whose keys, shapes and dtypes are
those of :func:`param_layout`; it is exactly what a shard stores under the
listed HDF5 paths, so sampler, geometry, shards and trainer share one layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import FACE_CLASSES, SEGMENTATION_CLASSES, MorphableModel

__all__ = ["FACE_CLASSES", "SEGMENTATION_CLASSES"]  # re-exported: defined with the model's regions

POSE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "tz")
"""``params/pose`` columns: angles in radians, translation in mm (model → camera)."""
POSE = {name: i for i, name in enumerate(POSE_FIELDS)}
ANGLES = slice(POSE["yaw"], POSE["roll"] + 1)
TRANSLATION = slice(POSE["tx"], POSE["tz"] + 1)

N_SH = 9
"""Second-order spherical harmonics: 9 coefficients per colour channel (see :mod:`synthface.shading`)."""

BACKGROUND_SOURCES: tuple[str, ...] = ("solid", "procedural", "image")
"""Values of the ``source`` column of ``params/background`` (its index)."""
BACKGROUND_FIELDS: tuple[str, ...] = (
    "source",
    "r0", "g0", "b0", "r1", "g1", "b1", "r2", "g2", "b2",
    "gradient_angle", "gradient_strength",
    "noise_scale", "noise_angle", "noise_dx", "noise_dy", "noise_threshold", "noise_softness", "detail", "blur",
    "image", "crop_x", "crop_y", "crop_size", "flip", "brightness", "contrast", "saturation",
)
"""``params/background`` columns (format 2). ``source`` indexes :data:`BACKGROUND_SOURCES`; colours are
linear RGB in [0, 1]: ``r0..b0`` the base colour (the whole background when solid), ``r1..b1`` the
far end of a linear gradient (angle in radians, strength in [0, 1]), ``r2..b2`` the colour of a fractal
noise pattern (scale in image widths⁻¹, angle, offset, threshold and edge softness in noise units),
``detail`` the contrast of fine texture and ``blur`` a defocus in pixels. Image sources: ``image`` is
the file's position in the folder's sorted list (its sha256 is ``params/background_sha256``); the
crop (origin and side as fractions of the image's shorter side), ``flip`` (0/1) and the colour jitter
(``brightness``, ``contrast``, ``saturation`` factors, 1 = unchanged) say how it was placed."""
BACKGROUND = {name: i for i, name in enumerate(BACKGROUND_FIELDS)}

MAX_SHAPES = 12
"""Clutter shapes per background (``params/background_shapes`` rows; unused rows have kind 0)."""
SHAPE_KINDS: tuple[str, ...] = ("none", "rectangle", "ellipse")
SHAPE_FIELDS: tuple[str, ...] = ("kind", "x", "y", "width", "height", "angle", "r", "g", "b", "softness")
"""``params/background_shapes`` columns: ``kind`` indexes :data:`SHAPE_KINDS`; centre, width and height
as fractions of the image size; angle in radians; linear RGB; edge softness as a fraction of the size.
Shapes are painted in row order over the gradient and noise."""
SHAPE = {name: i for i, name in enumerate(SHAPE_FIELDS)}

MAX_OCCLUDERS = 4
"""Occluders per sample (``params/occluders`` rows; unused rows have kind 0)."""
OCCLUDER_FIELDS: tuple[str, ...] = ("kind", "x", "y", "width", "height", "angle", "r", "g", "b", "texture", "z")
"""``params/occluders`` columns: ``kind`` indexes :data:`SHAPE_KINDS` (a flat card facing the camera);
centre, width and height as fractions of the image size; angle in radians; linear RGB; ``texture`` the
contrast of its mottling; ``z`` its camera-space depth in mm (in front of the face)."""
OCCLUDER = {name: i for i, name in enumerate(OCCLUDER_FIELDS)}

HAIR_FIELDS: tuple[str, ...] = ("coverage", "hairline_mm", "recession_mm", "thickness_mm", "r", "g", "b",
                                "strands", "sheen")
"""``params/hair`` columns: ``coverage`` 1 = hair, 0 = bald; the hairline's offset from the model's
face/scalp border (mm along the scalp; negative: lower, onto the forehead) plus ``recession_mm`` more
at the temples; the hair's thickness above the scalp (mm; a shell, tapered at the hairline); linear
RGB colour; strand contrast and sheen. Drawn on models with per-vertex ``regions`` (a scalp) only."""
HAIR = {name: i for i, name in enumerate(HAIR_FIELDS)}

FACIAL_HAIR_FIELDS: tuple[str, ...] = ("brow_thickness_mm", "brow_taper", "brow_arch_mm", "brow_lift_mm",
                                       "brow_length", "brow_density", "beard_density", "beard_reach",
                                       "r", "g", "b")
"""``params/facial_hair`` columns: the brows' thickness at their inner end (mm), the outer end's
thickness as a fraction of it, extra arch at the apex and a lift of the whole brow (mm, + = up; from
the model's brow landmarks), their length (fraction of the landmarks' brow; > 1 runs past it) and
density (0 = none … 1 = full); stubble/beard density (0 = shaven) and reach (how far up the cheeks, in
chin → nose-base heights); linear RGB colour of both. Drawn on models with ``regions`` and landmarks."""
FACIAL_HAIR = {name: i for i, name in enumerate(FACIAL_HAIR_FIELDS)}

CLOTHES_PATTERNS: tuple[str, ...] = ("plain", "stripes", "checks", "heather")
"""Values of the ``pattern`` column of ``params/clothes`` (its index)."""
CLOTHES_FIELDS: tuple[str, ...] = ("coverage", "neckline_mm", "v_neck_mm", "r", "g", "b", "pattern", "r2", "g2",
                                   "b2", "pattern_mm", "pattern_angle", "folds")
"""``params/clothes`` columns: ``coverage`` 1 = dressed, 0 = bare shoulders; the neckline's depth below
the neck's base (mm along the body; negative: up the neck, a high collar) plus ``v_neck_mm`` more at the
front centre; linear RGB of the cloth; ``pattern`` indexes :data:`CLOTHES_PATTERNS`, drawn in the second
colour ``r2..b2`` with period ``pattern_mm`` at ``pattern_angle`` (radians); ``folds`` the contrast of
the cloth's soft folds. Drawn on models with a bust (``regions`` class ``clothes``) only."""
CLOTHES = {name: i for i, name in enumerate(CLOTHES_FIELDS)}

EYES_FIELDS: tuple[str, ...] = ("r", "g", "b", "pupil", "fibres")
"""``params/eyes`` columns: the iris's linear RGB, the pupil's radius (a fraction of the iris's) and the
contrast of the iris's radial fibres. Drawn per pixel on models with ``iris_coordinates`` only."""
EYES = {name: i for i, name in enumerate(EYES_FIELDS)}

MATERIAL_FIELDS: tuple[str, ...] = ("specular", "shininess", "occlusion")
"""``params/material`` columns: Blinn-Phong specular strength (0 = matte) and exponent, and the
strength of the per-vertex ambient occlusion (0 = none, 1 = full; see :mod:`synthface.occlusion`)."""
MATERIAL = {name: i for i, name in enumerate(MATERIAL_FIELDS)}


@dataclass(frozen=True)
class ParamField:
    """One entry of a parameter batch: per-sample shape, dtype, and where a shard stores it."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    shard_path: str
    doc: str


@dataclass(frozen=True)
class ModelDims:
    """What a layout needs of a model: its coefficient counts (readers of shards made by a model
    they do not hold, e.g. ``verify``, take them from the shard)."""

    n_identity: int
    n_expression: int
    n_albedo: int


def param_layout(model: MorphableModel | ModelDims) -> dict[str, ParamField]:
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
        ParamField("material", (len(MATERIAL_FIELDS),), f32, "params/material",
                   "specular strength, shininess, ambient-occlusion strength"),
        ParamField("background", (len(BACKGROUND_FIELDS),), f32, "params/background",
                   "background source, colours, pattern and image crop (BACKGROUND_FIELDS)"),
        ParamField("background_shapes", (MAX_SHAPES, len(SHAPE_FIELDS)), f32, "params/background_shapes",
                   "clutter shapes painted over the background (SHAPE_FIELDS)"),
        ParamField("hair", (len(HAIR_FIELDS),), f32, "params/hair",
                   "procedural hair: coverage, hairline, recession, thickness, colour, strands, sheen"),
        ParamField("facial_hair", (len(FACIAL_HAIR_FIELDS),), f32, "params/facial_hair",
                   "procedural brows and stubble: brow shape, density, beard density and reach, colour"),
        ParamField("clothes", (len(CLOTHES_FIELDS),), f32, "params/clothes",
                   "procedural clothes on the bust: coverage, neckline, colours, pattern, folds"),
        ParamField("shadow", (), f32, "params/shadow",
                   "strength of cast shadows: 0 none, 1 the directional light fully blocked where shadowed"),
        ParamField("eyes", (len(EYES_FIELDS),), f32, "params/eyes",
                   "the iris drawn per pixel: colour, pupil size, fibre contrast (EYES_FIELDS)"),
        ParamField("occluders", (MAX_OCCLUDERS, len(OCCLUDER_FIELDS)), f32, "params/occluders",
                   "flat shapes in front of the face (OCCLUDER_FIELDS); kind 0 = none"),
        ParamField("background_sha256", (), np.dtype("S64"), "params/background_sha256",
                   "sha256 (hex) of the background image file; empty unless the source is an image"),
        ParamField("intrinsics", (3, 3), f32, "camera/intrinsics",
                   "pinhole K in pixels, origin at the top-left pixel's corner"),
        ParamField("index", (), np.dtype(np.int64), "index", "global sample index"),
    ]
    return {f.key: f for f in fields}
