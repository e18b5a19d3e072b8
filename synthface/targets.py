"""The trainer's regression target: the flat parameter vector, the pose's image-relative code and the
normalizer that makes every column O(1) — what CoarseNet outputs and every loss, checkpoint and
prediction reads. Works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .params import POSE, POSE_FIELDS

PARAM_VECTOR: tuple[str, ...] = ("identity", "expression", "pose")
"""Blocks of the trainer's flat parameter vector, in order (see :class:`ParameterNormalizer`)."""

POSE_CODE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "x_over_z", "y_over_z", "log_z_over_f")
"""Columns of the ``pose`` block in the trainer's vector (:func:`encode_pose`): the image sees the
face's position as ``tx/tz, ty/tz`` and its distance only through its size in pixels, ``tz/fx``."""
POSE_CODE = {name: i for i, name in enumerate(POSE_CODE_FIELDS)}

Array = np.ndarray | torch.Tensor


def _stack(parts: list[Array]) -> Array:
    return torch.stack(parts, -1) if isinstance(parts[0], torch.Tensor) else np.stack(parts, -1)


def encode_pose(pose: Array, intrinsics: Array) -> Array:
    """Pose (..., 6) (rad, mm) and K (..., 3, 3) → the image-relative code (..., 6) of :data:`POSE_CODE_FIELDS`.

    Why: a regressor cannot read ``tz`` in mm from an image (the focal length and the face's
    size set it), but it can read where the face is (``tx/tz``, ``ty/tz``) and how large it
    looks (``log(tz/fx)``); with K given, the code and the pose determine each other.
    """
    lib: Any = torch if isinstance(pose, torch.Tensor) else np
    tz = pose[..., POSE["tz"]]
    return _stack([pose[..., POSE["yaw"]], pose[..., POSE["pitch"]], pose[..., POSE["roll"]],
                   pose[..., POSE["tx"]] / tz, pose[..., POSE["ty"]] / tz, lib.log(tz / intrinsics[..., 0, 0])])


def decode_pose(code: Array, intrinsics: Array) -> Array:
    """The inverse of :func:`encode_pose`: code (..., 6) and K (..., 3, 3) → pose (..., 6) (rad, mm); differentiable."""
    lib: Any = torch if isinstance(code, torch.Tensor) else np
    c = POSE_CODE
    tz = intrinsics[..., 0, 0] * lib.exp(code[..., c["log_z_over_f"]])
    return _stack([code[..., c["yaw"]], code[..., c["pitch"]], code[..., c["roll"]],
                   code[..., c["x_over_z"]] * tz, code[..., c["y_over_z"]] * tz, tz])


@dataclass(frozen=True, eq=False)
class ParameterNormalizer:
    """Maps parameter blocks to the trainer's vector — ~zero mean, unit std per column — and back.

    Layout: blocks ``names`` (default :data:`PARAM_VECTOR`) of ``sizes`` columns, concatenated;
    :attr:`slices` gives each block's columns, :meth:`columns` a name per column (pose columns
    by :data:`synthface.params.POSE_FIELDS`). In the vector the ``pose`` block is the
    image-relative code of :func:`encode_pose`: :meth:`encode` takes physical blocks plus
    ``intrinsics``, :meth:`decode` / :meth:`to_params` need the same K back. :meth:`normalize`,
    :meth:`flatten` and friends are the plain per-column maps. The state is plain arrays
    (:meth:`state_dict`), so a checkpoint stores it and ``torch.load(weights_only=True)`` reads it back.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
        object.__setattr__(self, "mean", np.asarray(self.mean, np.float32).reshape(-1))
        object.__setattr__(self, "std", np.asarray(self.std, np.float32).reshape(-1))
        if len(self.names) != len(self.sizes) or self.mean.shape != (self.dim,) or self.std.shape != (self.dim,):
            raise ValueError(f"normalizer layout {dict(zip(self.names, self.sizes, strict=False))} does not "
                             f"match mean {self.mean.shape} / std {self.std.shape}")
        if not (np.isfinite(self.mean).all() and (self.std > 0).all()):
            raise ValueError("normalizer mean must be finite and std positive")

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    @property
    def slices(self) -> dict[str, slice]:
        """Block name → its columns in the flat vector."""
        ends = np.cumsum(self.sizes)
        return {n: slice(int(e - s), int(e)) for n, s, e in zip(self.names, self.sizes, ends, strict=True)}

    def columns(self) -> list[str]:
        """One name per column, e.g. ``identity[3]``, ``pose.yaw`` (for logs and per-parameter errors)."""
        out = []
        for name, size in zip(self.names, self.sizes, strict=True):
            if name == "pose" and size == len(POSE_FIELDS):
                out += [f"pose.{p}" for p in POSE_FIELDS]
            else:
                out += [f"{name}[{i}]" for i in range(size)]
        return out

    def flatten(self, blocks: Mapping[str, Array]) -> Array:
        """Concatenate ``blocks[name]`` (..., size) in layout order (numpy or torch)."""
        parts = [blocks[n] for n in self.names]
        for n, s, p in zip(self.names, self.sizes, parts, strict=True):
            if p.shape[-1] != s:
                raise ValueError(f"{n}: expected {s} columns, got {tuple(p.shape)}")
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(parts, dim=-1)  # type: ignore[arg-type]
        return np.concatenate(parts, axis=-1)

    def unflatten(self, vector: Array) -> dict[str, Array]:
        """Block name → view of its columns of ``vector`` (..., dim)."""
        return {n: vector[..., sl] for n, sl in self.slices.items()}

    def _stats_like(self, x: Array) -> tuple[Array, Array]:
        if isinstance(x, torch.Tensor):
            return (torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                    torch.as_tensor(self.std, dtype=x.dtype, device=x.device))
        return self.mean, self.std

    def normalize(self, x: Array) -> Array:
        """Vector units (pose as its code) → normalized; ``x`` is (..., dim), numpy or torch (any device)."""
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def denormalize(self, x: Array) -> Array:
        """Normalized → vector units (the inverse of :meth:`normalize`)."""
        mean, std = self._stats_like(x)
        return x * std + mean

    def _coded(self, blocks: Mapping[str, Array]) -> dict[str, Array]:
        """Physical blocks (+ ``intrinsics``) → the vector's blocks (pose replaced by its code)."""
        if "pose" not in self.names:
            return {n: blocks[n] for n in self.names}
        if "intrinsics" not in blocks:
            raise ValueError("encoding the pose needs the camera: pass 'intrinsics' (B, 3, 3) with the blocks")
        return {n: encode_pose(blocks[n], blocks["intrinsics"]) if n == "pose" else blocks[n] for n in self.names}

    def encode(self, blocks: Mapping[str, Array]) -> Array:
        """Physical blocks (B, size) plus ``intrinsics`` (B, 3, 3) → normalized vector (B, dim) (numpy or torch)."""
        return self.normalize(self.flatten(self._coded(blocks)))

    def decode(self, estimate: Array, intrinsics: Array) -> dict[str, Array]:
        """Normalized (B, dim) estimate and K (B, 3, 3) → physical blocks (numpy or torch; differentiable)."""
        blocks = dict(self.unflatten(self.denormalize(estimate)))
        if "pose" in blocks:
            if isinstance(estimate, torch.Tensor):
                intrinsics = torch.as_tensor(intrinsics, dtype=estimate.dtype, device=estimate.device)
            blocks["pose"] = decode_pose(blocks["pose"], intrinsics)
        return blocks

    def to_params(self, estimate: Array, intrinsics: Array) -> dict[str, np.ndarray]:
        """Normalized (B, dim) estimate (torch or numpy) and K (B, 3, 3) → physical blocks as contiguous
        float32 numpy arrays, the parameter-batch entries the renderer takes."""
        x = estimate.detach().cpu().numpy() if isinstance(estimate, torch.Tensor) else np.asarray(estimate)
        k = intrinsics.detach().cpu().numpy() if isinstance(intrinsics, torch.Tensor) else np.asarray(intrinsics)
        physical = self.decode(x.astype(np.float64), k.astype(np.float64))
        return {n: np.ascontiguousarray(v, dtype=np.float32) for n, v in physical.items()}

    @classmethod
    def fit(cls, blocks: Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]],
            names: Sequence[str] = PARAM_VECTOR, min_std: float = 1e-6) -> ParameterNormalizer:
        """Mean and std per column of the vector of physical ``blocks[name]`` (N, size) (with
        ``blocks["intrinsics"]`` when ``"pose"`` is among ``names``); columns with std < ``min_std`` get std 1.

        ``blocks`` may also be an iterable of such mappings (chunks of one set, e.g. one per shard):
        the moments are summed over them, so a large training split is never in memory at once."""
        chunks = [blocks] if isinstance(blocks, Mapping) else blocks
        n, total, total_sq, sizes = 0, 0.0, 0.0, None
        for chunk in chunks:
            if "pose" in names and "intrinsics" not in chunk:
                raise ValueError("fitting the pose code needs the camera: pass 'intrinsics' (N, 3, 3) with the blocks")
            coded = [encode_pose(np.asarray(chunk[m], np.float64), np.asarray(chunk["intrinsics"], np.float64))
                     if m == "pose" else np.asarray(chunk[m], np.float64) for m in names]
            coded = [c.reshape(len(c), -1) for c in coded]
            sizes = [c.shape[1] for c in coded]
            flat = np.concatenate(coded, axis=1)
            n, total, total_sq = n + len(flat), total + flat.sum(0), total_sq + np.square(flat).sum(0)
        if n < 1 or sizes is None:
            raise ConfigError("cannot fit the parameter normalizer: the training split is empty "
                              "(lower val_fraction or add data)")
        mean = np.asarray(total) / n
        std = np.sqrt(np.maximum(np.asarray(total_sq) / n - mean**2, 0.0))
        return cls(tuple(names), tuple(sizes), mean, np.where(std >= min_std, std, 1.0))

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint: names, sizes, and mean/std as float32 tensors."""
        return {"names": list(self.names), "sizes": list(self.sizes),
                "mean": torch.from_numpy(self.mean.copy()), "std": torch.from_numpy(self.std.copy())}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> ParameterNormalizer:
        def arr(v: Any) -> np.ndarray:
            return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)

        return cls(tuple(state["names"]), tuple(state["sizes"]), arr(state["mean"]), arr(state["std"]))
