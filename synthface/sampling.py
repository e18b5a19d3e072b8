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

from .config import SamplingConfig
from .errors import ConfigError
from .geometry import pose_to_camera
from .model import MorphableModel
from .params import ANGLES, POSE, TRANSLATION, param_layout
from .shading import C1


def _plan(blocks: list[tuple[str, int]]) -> tuple[dict[str, slice], int]:
    """Name → column slice of one random block, in a fixed order."""
    out, start = {}, 0
    for name, n in blocks:
        out[name] = slice(start, start + n)
        start += n
    return out, start


class ParameterSampler:
    """Samples parameter batches (shard ``params/`` layout) for one model, config and seed."""

    def __init__(self, model: MorphableModel, config: SamplingConfig | None = None, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
        self.model = model
        self.config = config or SamplingConfig()
        self.seed = int(seed)
        lo, hi = model.mean_shape.min(axis=0), model.mean_shape.max(axis=0)
        self.face_centre = ((lo + hi) / 2).astype(np.float64)
        """Model-space centre of the mean shape's bounding box (mm): what the camera aims at."""
        self.face_extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
        """Larger of the mean shape's width and height (mm): what ``face_fraction`` frames."""
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
            ("ambient", 1), ("directional", 1), ("background", 3),
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
        if idx.ndim != 1 or (idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0)):
            raise ConfigError("sample indices must be a 1-D sequence of non-negative integers")
        idx = idx.astype(np.int64)
        cfg, b = self.config, idx.size
        z, u = self._draw(idx)

        def normal(name: str, c) -> np.ndarray:
            return np.clip(c.std * z[:, self._normal[name]], -c.clip, c.clip)

        def uniform(name: str, bounds: tuple[float, float]) -> np.ndarray:
            return bounds[0] + (bounds[1] - bounds[0]) * u[:, self._uniform[name]]

        cam = cfg.camera
        distance = uniform("distance", cam.distance_mm)[:, 0]
        fraction = uniform("face_fraction", cam.face_fraction)[:, 0]
        focal = fraction * cfg.image_size * distance / self.face_extent
        intrinsics = np.zeros((b, 3, 3))
        intrinsics[:, 0, 0] = intrinsics[:, 1, 1] = focal
        intrinsics[:, :2, 2] = cfg.image_size / 2.0  # principal point: image centre, corner origin
        intrinsics[:, 2, 2] = 1.0
        p = cfg.pose
        angles = np.radians(np.stack([uniform("angles", r)[:, k] for k, r in
                                      enumerate((p.yaw_deg, p.pitch_deg, p.roll_deg))], axis=1))
        jitter_px = uniform("jitter", (-cam.center_jitter, cam.center_jitter)) * cfg.image_size
        light = cfg.light
        out = {
            "identity": normal("identity", cfg.identity),
            "albedo": normal("albedo", cfg.albedo),
            "expression": self._expression(z, u),
            "pose": self._pose(angles, distance, jitter_px * (distance / focal)[:, None]),
            "light": self._light(z[:, self._normal["light_direction"]],
                                 z[:, self._normal["light_second_order"]], z[:, self._normal["light_tint"]],
                                 uniform("ambient", light.ambient)[:, 0],
                                 uniform("directional", light.directional)[:, 0]),
            "background": (np.broadcast_to(cfg.background.colour, (b, 3)) if cfg.background.mode == "solid"
                           else uniform("background", cfg.background.brightness)),
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

    def _light(self, direction: np.ndarray, second_order: np.ndarray, tint: np.ndarray,
               ambient: np.ndarray, strength: np.ndarray) -> np.ndarray:
        """(B, 9, 3) SH coefficients: ambient · (1 + strength·(d·n) + second-order noise), tinted."""
        d = direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
        d[:, 2] = -np.abs(d[:, 2])  # light from the camera's side of the face (camera space, z forward)
        coeffs = np.zeros((d.shape[0], 9))
        coeffs[:, 0] = 1.0
        coeffs[:, 1:4] = strength[:, None] * d[:, [1, 2, 0]] / C1  # band 1 holds (y, z, x)
        coeffs[:, 4:9] = self.config.light.second_order * second_order
        colour = np.exp(self.config.light.tint * tint)  # (B, 3), positive
        return ambient[:, None, None] * coeffs[:, :, None] * colour[:, None, :]


def sample_params(model: MorphableModel, seed: int = 0, indices: Iterable[int] | np.ndarray = (0,),
                  config: SamplingConfig | None = None) -> dict[str, np.ndarray]:
    """Parameters for ``indices`` under ``seed``: a dict of arrays in the shard ``params/`` layout.

    Keys: identity, expression, albedo, pose, light, background, ``intrinsics`` (B, 3, 3) — the
    camera K stored at ``camera/intrinsics`` in shards — and index.
    """
    return ParameterSampler(model, config, seed).sample(indices)
