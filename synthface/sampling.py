"""Draw per-sample parameters: sample ``i`` depends only on ``(seed, i)`` and the config.

Each sample gets its own ``numpy.random.default_rng([seed, i])`` and draws two
fixed-size blocks (standard normals and uniforms) whose columns are named in a
plan; everything after that is vectorized over the batch. So the bytes of
sample ``i`` do not depend on batch composition, shard size, worker count or
resume.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .backgrounds import BackgroundImages
from .config import EyesConfig, FacialHairConfig, SamplingConfig
from .errors import ConfigError
from .framing import face_frame, focal_length
from .geometry import pose_to_camera
from .model import MorphableModel
from .params import (
    ANGLES,
    BACKGROUND,
    BACKGROUND_FIELDS,
    BACKGROUND_SOURCES,
    CLOTHES,
    CLOTHES_FIELDS,
    EYES,
    EYES_FIELDS,
    FACIAL_HAIR,
    FACIAL_HAIR_FIELDS,
    HAIR,
    HAIR_FIELDS,
    MATERIAL_FIELDS,
    MAX_OCCLUDERS,
    MAX_SHAPES,
    OCCLUDER,
    OCCLUDER_FIELDS,
    POSE,
    SHAPE,
    SHAPE_FIELDS,
    TRANSLATION,
    param_layout,
)
from .shading import key_light


def _plan(blocks: list[tuple[str, int]]) -> tuple[dict[str, slice], int]:
    """Name → column slice of one random block, in a fixed order."""
    out, start = {}, 0
    for name, n in blocks:
        out[name] = slice(start, start + n)
        start += n
    return out, start


HAIR_COLOURS: dict[str, tuple[tuple[float, float, float], float]] = {
    "black": ((0.012, 0.010, 0.009), 0.30), "dark brown": ((0.035, 0.022, 0.014), 0.25),
    "brown": ((0.09, 0.055, 0.032), 0.15), "light brown": ((0.20, 0.13, 0.075), 0.08),
    "blond": ((0.42, 0.30, 0.16), 0.08), "red": ((0.25, 0.075, 0.03), 0.04),
    "grey": ((0.30, 0.29, 0.28), 0.07), "white": ((0.62, 0.60, 0.57), 0.03),
}
"""Natural hair colours (linear RGB) and how often each is drawn (``hair.colours = "natural"``)."""

EYE_COLOURS: dict[str, tuple[tuple[float, float, float], float]] = {
    "dark brown": ((0.048, 0.019, 0.009), 0.40), "brown": ((0.141, 0.058, 0.019), 0.22),
    "hazel": ((0.223, 0.127, 0.038), 0.10), "green": ((0.114, 0.156, 0.061), 0.06),
    "blue": ((0.091, 0.171, 0.305), 0.15), "grey": ((0.171, 0.205, 0.223), 0.07),
}
"""Iris colours (linear RGB; sRGB 62/38/24 … 115/125/130) and how often each is drawn (``eyes.colours =
"natural"``): brown eyes are most people's; blue, grey and green a minority."""


def _palette(palette: dict[str, tuple[tuple[float, float, float], float]], pick: np.ndarray) -> np.ndarray:
    """(B, 3) colours of ``palette`` drawn by its weights from uniform draws ``pick`` (B,)."""
    colours, weights = zip(*palette.values(), strict=True)
    k = np.searchsorted(np.cumsum(weights) / np.sum(weights), pick, side="right")
    return np.array(colours)[np.minimum(k, len(colours) - 1)]


_BROW_SHAPE = ("brow_thickness_mm", "brow_taper", "brow_arch_mm", "brow_lift_mm", "brow_length", "brow_density")


def typical_eyes(config: EyesConfig | None = None) -> np.ndarray:
    """(5,) float32 ``params/eyes`` of a typical face: brown, every other field at the middle of its range.
    What a photo's and a trainer's renders use (the iris is unknown)."""
    cfg = config or EyesConfig()
    out = np.zeros(len(EYES_FIELDS), np.float32)
    out[EYES["r"]:EYES["b"] + 1] = EYE_COLOURS["brown"][0]
    out[EYES["pupil"]], out[EYES["fibres"]] = np.mean(cfg.pupil), np.mean(cfg.fibres)
    return out


def typical_facial_hair(config: FacialHairConfig | None = None) -> np.ndarray:
    """(11,) float32 ``params/facial_hair`` of a typical face: every brow field at the middle of its
    range, no stubble, dark brown. What a photo's shading is explained with (its brows are unknown)."""
    cfg = config or FacialHairConfig()
    out = np.zeros(len(FACIAL_HAIR_FIELDS), np.float32)
    for name in _BROW_SHAPE:
        out[FACIAL_HAIR[name]] = np.mean(getattr(cfg, name))
    out[FACIAL_HAIR["r"]:FACIAL_HAIR["b"] + 1] = np.array(HAIR_COLOURS["dark brown"][0]) * np.mean(cfg.darkness)
    return out


_CLOTHES_DRAWS, _N_CLOTHES_DRAWS = _plan([("dressed", 1), ("neckline", 1), ("v_neck", 2), ("colour", 4),
                                         ("colour2", 4), ("saturation", 1), ("pattern", 4)])
"""Uniform columns of a sample's clothes (:meth:`ParameterSampler._clothes`)."""


_TINT_AXES = np.array([np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0),
                       0.25 * np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0),
                       0.25 * np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)])
"""Log-colour directions of the light's three tint draws (rows): warm ↔ cool (red against blue, as a
colour temperature moves; std ``light.tint``), then green ↔ magenta and grey level, each a quarter of it:
photos' casts lie mostly along the colour-temperature line, rarely magenta."""


def _warmth(u_warm: np.ndarray, u_green: np.ndarray) -> np.ndarray:
    """(B, 3) per-channel factors that vary a palette colour: up to ±7.5 % redder ↔ bluer and ±2.5 % greener
    ↔ more magenta, from uniform draws. Pigment varies along the warm line; per-channel jitter of equal
    size turned grey and white hair lilac."""
    warm = 0.15 * (u_warm - 0.5)[:, None] * np.array([1.0, 0.0, -1.0])
    green = 0.05 * (u_green - 0.5)[:, None] * np.array([-0.5, 1.0, -0.5])
    return 1.0 + warm + green


def _span(bounds: tuple[float, float], u: np.ndarray) -> np.ndarray:
    """Uniform draws ``u`` in [0, 1) mapped onto the range ``bounds`` (lo, hi)."""
    return bounds[0] + (bounds[1] - bounds[0]) * u


class ParameterSampler:
    """Samples parameter batches (shard ``params/`` layout) for one model, config and seed.

    ``backgrounds``: the image folder of ``background.mode = "images"`` (scanned from
    ``background.directory`` when not given); its sorted file list decides which file a sample shows.
    """

    def __init__(self, model: MorphableModel, config: SamplingConfig | None = None, seed: int = 0,
                 backgrounds: BackgroundImages | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        self.model = model
        self.config = config or SamplingConfig()
        self.seed = int(seed)
        if self.config.background.mode == "images" and backgrounds is None:
            backgrounds = BackgroundImages.scan(self.config.background.directory)
        self.backgrounds = backgrounds
        frame = face_frame(model)  # the framing convention the photo crop reproduces (synthface.framing)
        self.face_centre = frame.centre
        """Model-space centre of the mean face's bounding box (mm): what the camera aims at."""
        self.face_extent = frame.extent
        """Larger of the mean face's width and height (mm): what ``face_fraction`` frames."""
        blend = model.expression_kind == "blendshape"
        k_exp = model.n_expression
        self._normal, self._n_normal = _plan([
            ("identity", model.n_identity), ("albedo", model.n_albedo),
            ("expression", 0 if blend else k_exp),
            ("light_direction", 3), ("light_second_order", 5), ("light_tint", 3),
        ])
        self._uniform, self._n_uniform = _plan([
            ("expression_active", k_exp if blend else 0), ("expression_weight", k_exp if blend else 0),
            ("neutral", 1), ("angles", 3), ("distance", 1), ("face_fraction", 1), ("jitter", 2),
            ("ambient", 1), ("directional", 1), ("background", len(BACKGROUND_FIELDS)),
            ("shapes", MAX_SHAPES * (len(SHAPE_FIELDS) + 1)), ("material", len(MATERIAL_FIELDS)),
            ("occluders", MAX_OCCLUDERS * (len(OCCLUDER_FIELDS) + 1)), ("hair", len(HAIR_FIELDS) + 2),
            ("facial_hair", len(FACIAL_HAIR_FIELDS) + 1), ("light_above", 1),
            # new blocks go last: earlier columns keep their draws
            ("clothes", _N_CLOTHES_DRAWS), ("eyes", len(EYES_FIELDS) + 2), ("shadow", 1),
            ("light_key", 2),
        ])

    def _draw(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        normal = np.empty((indices.size, self._n_normal))
        uniform = np.empty((indices.size, self._n_uniform))
        for row, i in enumerate(indices.tolist()):  # one generator per sample: the seeding contract
            rng = np.random.default_rng([self.seed, i])
            normal[row] = rng.standard_normal(self._n_normal)
            uniform[row] = rng.random(self._n_uniform)
        return normal, uniform

    def sample(self, indices: Iterable[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Parameters for the given global sample indices, keyed as :func:`param_layout` says."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.ndim != 1 or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                                           or idx.max() > np.iinfo(np.int64).max)):
            raise ConfigError("sample indices must be a 1-D sequence of integers in [0, 2**63)")
        idx = idx.astype(np.int64)
        cfg, b = self.config, idx.size
        z, u = self._draw(idx)

        def normal(name: str, c) -> np.ndarray:
            return np.clip(c.std * z[:, self._normal[name]], -c.clip, c.clip)

        def uniform(name: str, bounds: tuple[float, float]) -> np.ndarray:
            return _span(bounds, u[:, self._uniform[name]])

        cam = cfg.camera
        distance = uniform("distance", cam.distance_mm)[:, 0]
        fraction = uniform("face_fraction", cam.face_fraction)[:, 0]
        focal = focal_length(fraction, cfg.image_size, distance, self.face_extent)
        intrinsics = np.zeros((b, 3, 3))
        intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
        intrinsics[:, :2, 2] = cfg.image_size / 2.0  # principal point: image centre, corner origin
        intrinsics[:, 2, 2] = 1.0
        p = cfg.pose
        angles = np.radians(np.stack([uniform("angles", r)[:, k] for k, r in
                                      enumerate((p.yaw_deg, p.pitch_deg, p.roll_deg))], axis=1))
        jitter_px = uniform("jitter", (-cam.center_jitter, cam.center_jitter)) * cfg.image_size
        light = cfg.light
        hair = self._hair(u[:, self._uniform["hair"]])
        out = {
            "identity": normal("identity", cfg.identity),
            "albedo": normal("albedo", cfg.albedo),
            "expression": self._expression(z, u),
            "pose": self._pose(angles, distance, jitter_px * (distance / focal)[:, None]),
            "light": self._light(z[:, self._normal["light_direction"]],
                                 z[:, self._normal["light_second_order"]], z[:, self._normal["light_tint"]],
                                 uniform("ambient", light.ambient)[:, 0],
                                 uniform("directional", light.directional)[:, 0],
                                 u[:, self._uniform["light_above"]][:, 0] < light.above_prob,
                                 np.radians(uniform("light_key", light.key_azimuth_deg)[:, 0]),
                                 np.radians(uniform("light_key", light.key_elevation_deg)[:, 1])),
            "material": self._material(u[:, self._uniform["material"]]),
            "occluders": self._occluders(u[:, self._uniform["occluders"]], distance),
            "hair": hair,
            "facial_hair": self._facial_hair(u[:, self._uniform["facial_hair"]], hair[:, HAIR["r"]:HAIR["b"] + 1]),
            "clothes": self._clothes(u[:, self._uniform["clothes"]]),
            "eyes": self._eyes(u[:, self._uniform["eyes"]]),
            "shadow": uniform("shadow", light.shadow)[:, 0],
            **self._background(u[:, self._uniform["background"]], u[:, self._uniform["shapes"]]),
            "intrinsics": intrinsics,
            "index": idx,
        }
        layout = param_layout(self.model)
        return {k: np.ascontiguousarray(out[k], dtype=layout[k].dtype).reshape((b, *layout[k].shape))
                for k in layout}

    def _expression(self, z: np.ndarray, u: np.ndarray) -> np.ndarray:
        cfg = self.config.expression
        if self.model.expression_kind == "blendshape":
            active = u[:, self._uniform["expression_active"]] < cfg.active_prob
            weights = active * cfg.max_weight * u[:, self._uniform["expression_weight"]]
            names = self.model.expression_names
            # Model rules "weight(a) <= weight(b)" (metadata blendshape_caps), e.g. mouthClose <= jawOpen.
            for capped, cap in self.model.metadata.get("blendshape_caps", {}).items():
                weights[:, names.index(capped)] = np.minimum(weights[:, names.index(capped)],
                                                             weights[:, names.index(cap)])
        else:
            weights = np.clip(cfg.std * z[:, self._normal["expression"]], -cfg.clip, cfg.clip)
        neutral = u[:, self._uniform["neutral"]] < cfg.neutral_prob
        return np.where(neutral, 0.0, weights)

    def _pose(self, angles: np.ndarray, distance: np.ndarray, shift_mm: np.ndarray) -> np.ndarray:
        """Rotation as drawn; translation aims the camera at the face centre, then shifts it sideways."""
        pose = np.zeros((angles.shape[0], 6))
        pose[:, ANGLES] = angles
        rot, _ = pose_to_camera(pose)
        pose[:, TRANSLATION] = -(rot @ self.face_centre)
        pose[:, POSE["tx"]:POSE["ty"] + 1] += shift_mm
        pose[:, POSE["tz"]] += distance
        return pose

    def _material(self, u: np.ndarray) -> np.ndarray:
        """(B, 3) specular strength, shininess (log-uniform), occlusion strength."""
        m = self.config.material
        lo, hi = np.log(m.shininess[0]), np.log(m.shininess[1])
        return np.stack([_span(m.specular, u[:, 0]),
                         np.exp(lo + (hi - lo) * u[:, 1]),
                         _span(m.occlusion, u[:, 2])], axis=1)

    def _hair(self, u: np.ndarray) -> np.ndarray:
        """(B, 9) hair parameters; the colour is a palette entry varied in brightness and hue."""
        cfg, b = self.config.hair, u.shape[0]
        col = {name: u[:, HAIR[name]] for name in HAIR_FIELDS}
        out = np.zeros((b, len(HAIR_FIELDS)))

        out[:, HAIR["coverage"]] = col["coverage"] >= cfg.bald_prob
        out[:, HAIR["hairline_mm"]] = _span(cfg.hairline_mm, col["hairline_mm"])
        out[:, HAIR["recession_mm"]] = _span(cfg.recession_mm, col["recession_mm"] ** 2)  # most recede little
        out[:, HAIR["thickness_mm"]] = _span(cfg.thickness_mm, col["thickness_mm"])
        if cfg.colours == "natural":
            base = _palette(HAIR_COLOURS, u[:, -2])
            rgb = base * (0.75 + 0.5 * col["r"])[:, None] * _warmth(col["g"], col["b"])
        else:
            rgb = np.stack([col["r"], col["g"], col["b"]], 1) ** 2.2
        out[:, HAIR["r"]:HAIR["b"] + 1] = np.clip(rgb, 0.0, 1.0)
        out[:, HAIR["strands"]] = _span(cfg.strands, col["strands"])
        out[:, HAIR["sheen"]] = _span(cfg.sheen, col["sheen"])
        return out

    def _facial_hair(self, u: np.ndarray, hair_rgb: np.ndarray) -> np.ndarray:
        """(B, 11) brow and stubble parameters; their colour is the hair's, darkened (brows of blond or
        grey hair are usually darker than it)."""
        cfg = self.config.facial_hair
        out = np.zeros((u.shape[0], len(FACIAL_HAIR_FIELDS)))
        for name in (*_BROW_SHAPE, "beard_density", "beard_reach"):
            out[:, FACIAL_HAIR[name]] = _span(getattr(cfg, name), u[:, FACIAL_HAIR[name]])
        out[:, FACIAL_HAIR["beard_density"]] *= u[:, -1] < cfg.beard_prob
        dark = _span(cfg.darkness, u[:, FACIAL_HAIR["r"]])
        out[:, FACIAL_HAIR["r"]:FACIAL_HAIR["b"] + 1] = hair_rgb * dark[:, None]
        return out

    def _clothes(self, u: np.ndarray) -> np.ndarray:
        """(B, 13) clothes: mostly muted colours (saturation drawn as u², as worn clothes are), a pattern
        by ``pattern_probs``, V necks on ``v_neck_prob`` of them."""
        cfg, d = self.config.clothes, {name: u[:, cols] for name, cols in _CLOTHES_DRAWS.items()}
        out = np.zeros((u.shape[0], len(CLOTHES_FIELDS)))
        out[:, CLOTHES["coverage"]] = d["dressed"][:, 0] >= cfg.bare_prob
        out[:, CLOTHES["neckline_mm"]] = _span(cfg.neckline_mm, d["neckline"][:, 0])
        out[:, CLOTHES["v_neck_mm"]] = _span(cfg.v_neck_mm, d["v_neck"][:, 0]) * (d["v_neck"][:, 1] < cfg.v_neck_prob)
        saturation = d["saturation"] ** 2
        for first, draw in (("r", "colour"), ("r2", "colour2")):
            srgb, shade = d[draw][:, :3], _span((0.08, 0.9), d[draw][:, 3:])  # hue, then dark … light cloth
            grey = srgb.mean(axis=1, keepdims=True)
            srgb = np.clip(shade * (1.0 + saturation * (srgb - grey) / np.maximum(grey, 0.05)), 0.0, 1.0)
            out[:, CLOTHES[first]:CLOTHES[first] + 3] = srgb**2.2  # linear RGB
        weights = np.cumsum(cfg.pattern_probs) / np.sum(cfg.pattern_probs)
        out[:, CLOTHES["pattern"]] = np.minimum(np.searchsorted(weights, d["pattern"][:, 0], side="right"), 3)
        out[:, CLOTHES["pattern_mm"]] = _span(cfg.pattern_mm, d["pattern"][:, 1])
        out[:, CLOTHES["pattern_angle"]] = np.pi / 2 * (d["pattern"][:, 2] < 0.5)  # vertical or horizontal
        out[:, CLOTHES["folds"]] = _span(cfg.folds, d["pattern"][:, 3])
        return out

    def _eyes(self, u: np.ndarray) -> np.ndarray:
        """(B, 5) iris: a palette colour varied ±25 % in brightness and ±7.5 % per channel, pupil, fibres."""
        cfg = self.config.eyes
        col = {name: u[:, EYES[name]] for name in EYES_FIELDS}
        if cfg.colours == "natural":
            rgb = _palette(EYE_COLOURS, col["r"]) * (0.75 + 0.5 * u[:, -2])[:, None] * _warmth(col["g"], col["b"])
        else:
            rgb = np.stack([col["r"], col["g"], col["b"]], 1) ** 2.2 * 0.4  # irises are dark: at most 0.4 linear
        out = np.zeros((u.shape[0], len(EYES_FIELDS)))
        out[:, EYES["r"]:EYES["b"] + 1] = np.clip(rgb, 0.0, 1.0)
        out[:, EYES["pupil"]] = _span(cfg.pupil, col["pupil"])
        out[:, EYES["fibres"]] = _span(cfg.fibres, col["fibres"])
        return out

    def _occluders(self, u: np.ndarray, distance: np.ndarray) -> np.ndarray:
        """(B, O, 11): the first ``count`` rows are cards or discs around the image centre, in front of the face."""
        cfg, b = self.config.occluders, u.shape[0]
        u = u.reshape(b, MAX_OCCLUDERS, len(OCCLUDER_FIELDS) + 1)
        col = {name: u[..., OCCLUDER[name]] for name in OCCLUDER_FIELDS}
        count = np.floor(u[:, 0, -1] * (cfg.count + 1))
        used = np.arange(MAX_OCCLUDERS)[None, :] < count[:, None]
        out = np.zeros((b, MAX_OCCLUDERS, len(OCCLUDER_FIELDS)))
        out[..., OCCLUDER["kind"]] = np.where(col["kind"] < 0.6, 1, 2)
        out[..., OCCLUDER["x"]] = 0.2 + 0.6 * col["x"]
        out[..., OCCLUDER["y"]] = 0.2 + 0.6 * col["y"]
        out[..., OCCLUDER["width"]] = _span(cfg.size, col["width"])
        out[..., OCCLUDER["height"]] = _span(cfg.size, col["height"])
        out[..., OCCLUDER["angle"]] = np.pi * col["angle"]
        rgb = np.stack([col["r"], col["g"], col["b"], u[..., -1]], axis=-1)
        out[..., OCCLUDER["r"]:OCCLUDER["b"] + 1] = self._colours(rgb)
        out[..., OCCLUDER["texture"]] = _span(cfg.texture, col["texture"])
        gap = _span(cfg.gap_mm, col["z"])
        out[..., OCCLUDER["z"]] = np.maximum(distance[:, None] - gap, 20.0)
        return np.where(used[..., None], out, 0.0)

    def _colours(self, u: np.ndarray) -> np.ndarray:
        """(B, ..., 4) uniforms → (B, ..., 3) linear RGB in the brightness range, desaturated (rooms, walls
        and clutter are seldom strongly coloured: the chroma keeps 0–70 %, most often little of it)."""
        lo, hi = self.config.background.brightness
        rgb = lo + (hi - lo) * u[..., :3]
        grey = rgb.mean(axis=-1, keepdims=True)
        return grey + (rgb - grey) * (0.7 * u[..., 3:4] ** 2)

    def _background(self, u: np.ndarray, u_shapes: np.ndarray) -> dict[str, np.ndarray]:
        """``background`` (B, K_bg), ``background_shapes`` (B, S, 10) and ``background_sha256`` (B,)."""
        cfg, b = self.config.background, u.shape[0]
        col = {name: u[:, BACKGROUND[name]] for name in BACKGROUND_FIELDS}
        out = np.zeros((b, len(BACKGROUND_FIELDS)))
        shapes = np.zeros((b, MAX_SHAPES, len(SHAPE_FIELDS)))
        sha = np.full(b, b"", dtype="S64")
        source = {"solid": "solid", "random": "solid", "images": "image"}.get(cfg.mode, cfg.mode)
        out[:, BACKGROUND["source"]] = BACKGROUND_SOURCES.index(source)
        rgb = slice(BACKGROUND["r0"], BACKGROUND["b2"] + 1)
        if cfg.mode == "solid":
            out[:, BACKGROUND["r0"]:BACKGROUND["b0"] + 1] = cfg.colour
            return {"background": out, "background_shapes": shapes, "background_sha256": sha}
        lo, hi = cfg.brightness
        if cfg.mode == "random":  # format 1's background: each channel uniform in the brightness range
            out[:, BACKGROUND["r0"]:BACKGROUND["b0"] + 1] = lo + (hi - lo) * u[:, rgb][:, :3]
            return {"background": out, "background_shapes": shapes, "background_sha256": sha}
        blur = _span(cfg.blur, col["blur"])
        out[:, BACKGROUND["blur"]] = blur
        if cfg.mode == "images":
            files = self.backgrounds
            pick = np.minimum((col["image"] * len(files)).astype(np.int64), len(files) - 1)
            out[:, BACKGROUND["image"]] = pick
            out[:, BACKGROUND["crop_size"]] = _span(cfg.crop, col["crop_size"])
            out[:, BACKGROUND["crop_x"]] = col["crop_x"]
            out[:, BACKGROUND["crop_y"]] = col["crop_y"]
            out[:, BACKGROUND["flip"]] = col["flip"] < 0.5
            for name in ("brightness", "contrast", "saturation"):
                out[:, BACKGROUND[name]] = 1.0 + cfg.jitter * (2.0 * col[name] - 1.0)
            sha = np.array([files.sha256[k] for k in pick.tolist()], dtype="S64")
            return {"background": out, "background_shapes": shapes, "background_sha256": sha}
        # procedural: three colours; their saturations reuse the uniforms of the (unused) image jitter columns
        saturation = np.stack([col["brightness"], col["contrast"], col["saturation"]], axis=1)[..., None]
        out[:, rgb] = self._colours(np.concatenate([u[:, rgb].reshape(b, 3, 3), saturation], axis=2)).reshape(b, 9)
        out[:, BACKGROUND["gradient_angle"]] = 2 * np.pi * col["gradient_angle"]
        out[:, BACKGROUND["gradient_strength"]] = col["gradient_strength"]
        out[:, BACKGROUND["noise_scale"]] = np.exp(np.log(0.25) + np.log(12.0) * col["noise_scale"])  # 0.25..3
        out[:, BACKGROUND["noise_angle"]] = 2 * np.pi * col["noise_angle"]
        out[:, BACKGROUND["noise_dx"]] = col["noise_dx"]
        out[:, BACKGROUND["noise_dy"]] = col["noise_dy"]
        out[:, BACKGROUND["noise_threshold"]] = 0.35 + 0.3 * col["noise_threshold"]
        out[:, BACKGROUND["noise_softness"]] = 0.02 + 0.3 * col["noise_softness"]
        out[:, BACKGROUND["detail"]] = 0.2 * col["detail"]
        shapes = self._shapes(u_shapes.reshape(b, MAX_SHAPES, len(SHAPE_FIELDS) + 1), blur)
        return {"background": out, "background_shapes": shapes, "background_sha256": sha}

    def _shapes(self, u: np.ndarray, blur: np.ndarray) -> np.ndarray:
        """(B, S, 11) uniforms → (B, S, 10) clutter shapes; the first ``count`` rows are used."""
        b = u.shape[0]
        count = np.floor(u[:, 0, -1] * (self.config.background.shapes + 1))  # 0..shapes, uniform
        shapes = np.zeros((b, MAX_SHAPES, len(SHAPE_FIELDS)))
        used = np.arange(MAX_SHAPES)[None, :] < count[:, None]
        col = {name: u[..., SHAPE[name]] for name in SHAPE_FIELDS}
        shapes[..., SHAPE["kind"]] = np.where(used, np.where(col["kind"] < 0.6, 1, 2), 0)
        shapes[..., SHAPE["x"]] = -0.1 + 1.2 * col["x"]
        shapes[..., SHAPE["y"]] = -0.1 + 1.2 * col["y"]
        shapes[..., SHAPE["width"]] = np.exp(np.log(0.04) + np.log(25.0) * col["width"])  # 0.04..1 of the image
        shapes[..., SHAPE["height"]] = np.exp(np.log(0.04) + np.log(25.0) * col["height"])
        # Half of them upright (walls, frames, shelves are), the rest at any angle.
        shapes[..., SHAPE["angle"]] = np.where(col["angle"] < 0.5, 0.0, (col["angle"] - 0.5) * 2 * np.pi)
        rgb = self._colours(np.stack([col["r"], col["g"], col["b"], col["softness"]], axis=-1))
        shapes[..., SHAPE["r"]:SHAPE["b"] + 1] = rgb
        size = self.config.image_size
        shapes[..., SHAPE["softness"]] = (0.5 + blur[:, None]) / size + 0.01 * col["softness"] ** 2
        return np.where(used[..., None], shapes, 0.0)

    def _light(self, direction: np.ndarray, second_order: np.ndarray, tint: np.ndarray,
               ambient: np.ndarray, strength: np.ndarray, above: np.ndarray,
               azimuth: np.ndarray, elevation: np.ndarray) -> np.ndarray:
        """(B, 9, 3) SH coefficients: ambient · ((1 − share)·fill + share·key(d·n) + second-order noise),
        tinted; key is :func:`~synthface.shading.key_light` (a clamped cosine), ``share`` = ``strength``.

        Where ``above``, ``d`` is a key light at ``azimuth`` beside the camera and ``elevation`` above the
        face (rad; photos are mostly lit so: the brow ridge shades the eyes, the nose its underside);
        elsewhere it is uniform over the camera's half of the sphere."""
        d = direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        d[:, 2] = -np.abs(d[:, 2])  # light from the camera's side of the face (camera space, z forward)
        key = np.stack([np.sin(azimuth) * np.cos(elevation), -np.sin(elevation),  # camera y points down
                        -np.cos(azimuth) * np.cos(elevation)], axis=1)
        d = np.where(above[:, None], key, d)
        coeffs = strength[:, None] * key_light(d)
        coeffs[:, 0] += 1.0 - strength
        coeffs[:, 4:9] += self.config.light.second_order * second_order
        colour = np.exp(self.config.light.tint * tint @ _TINT_AXES)  # (B, 3), positive
        return ambient[:, None, None] * coeffs[:, :, None] * colour[:, None, :]


def sample_params(model: MorphableModel, seed: int = 0, indices: Iterable[int] | np.ndarray = (0,),
                  config: SamplingConfig | None = None) -> dict[str, np.ndarray]:
    """Parameters for ``indices`` under ``seed``: a dict of arrays in the shard ``params/`` layout.

    Keys: identity, expression, albedo, pose, light, material, background, background_shapes,
    background_sha256, ``intrinsics`` (B, 3, 3) — the
    camera K stored at ``camera/intrinsics`` in shards — and index.
    """
    return ParameterSampler(model, config, seed).sample(indices)
