"""``ShardDataset``: a torch Dataset over synthface shards, with a deterministic train/val split.

Index: the constructor reads each directory's ``manifest.json`` (or, for a shard file given
directly, its attributes) through :func:`synthface.shards.open_source`, which validates every
shard's format, version, index range, seed and model (one header read per shard, no sample
data), and builds a global position → (shard, row) map. It checks the
requested datasets' shapes in one shard per source; corruption inside sample data can only be
seen when a sample is read, and raises :class:`~synthface.errors.ShardError` then.

Workers: HDF5 files are opened lazily, in the process that reads, on its first ``__getitem__``
(handles are keyed by ``os.getpid()``; a forked worker never touches a handle its parent
opened, and pickling drops handles), so ``DataLoader(num_workers=k)`` is safe with fork,
spawn and forkserver.

Split: sample ``i`` of a dataset generated with seed ``s`` is in the validation split iff
``split_unit(s, i) < val_fraction`` (a splitmix64 hash of ``(s, i)`` mapped to [0, 1)). It
depends only on the sample's identity, never on shard size, worker count or the order the
paths are given; raising ``val_fraction`` only moves samples from train to val.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filters: default shards are Blosc-compressed)
import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Degradations, degrade
from .errors import ConfigError, ShardError
from .params import FACIAL_HAIR_FIELDS, MATERIAL_FIELDS, POSE, POSE_FIELDS
from .shards import open_source

PARAM_VECTOR: tuple[str, ...] = ("identity", "expression", "pose")
"""Blocks of the trainer's flat parameter vector, in order (see :class:`ParameterNormalizer`)."""

POSE_CODE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "x_over_z", "y_over_z", "log_z_over_f")
"""Columns of the ``pose`` block in the trainer's vector (:func:`encode_pose`): the image sees the
face's position as ``tx/tz, ty/tz`` and its distance only through its size in pixels, ``tz/fx``."""
POSE_CODE = {name: i for i, name in enumerate(POSE_CODE_FIELDS)}

Split = Literal["train", "val", "all"]
Array = np.ndarray | torch.Tensor


# ---------------------------------------------------------------- fields

def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def _plain(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _unit_chw(a: np.ndarray) -> torch.Tensor:
    """uint8 HWC → float32 CHW in [0, 1] in one numpy pass (10x faster here than torch's permute/to/div)."""
    out = np.empty((a.shape[2], *a.shape[:2]), np.float32)
    np.divide(a.transpose(2, 0, 1), np.float32(255), out=out)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class FieldSpec:
    """One item key: the shard dataset it reads and how a sample row becomes a tensor."""

    dataset: str
    convert: Callable[[np.ndarray], torch.Tensor]
    doc: str
    format1: np.ndarray | None = None
    """What a format-1 shard, which lacks the dataset, held implicitly (None: the field needs format 2)."""


FIELDS: dict[str, FieldSpec] = {
    "image": FieldSpec("image", _unit_chw, "(3,H,W) float32 sRGB in [0,1]"),
    "depth": FieldSpec("depth", lambda a: _plain(a[None]), "(1,H,W) float32 camera z in mm, 0 = background"),
    "mask": FieldSpec("mask", lambda a: _plain(a[None].astype(np.float32)), "(1,H,W) float32, 1 = face"),
    "segmentation": FieldSpec("segmentation", lambda a: _plain(a.astype(np.int64)),
                              "(H,W) int64 class ids, synthface.model.SEGMENTATION_CLASSES (format 2)"),
    "normals": FieldSpec("normals", _chw, "(3,H,W) float32 (needs --extras normals)"),
    "pncc": FieldSpec("pncc", _chw, "(3,H,W) float32 (needs --extras pncc)"),
    "identity": FieldSpec("params/identity", _plain, "(K_id,) float32, std units, not normalized"),
    "expression": FieldSpec("params/expression", _plain, "(K_exp,) float32, not normalized"),
    "albedo": FieldSpec("params/albedo", _plain, "(K_alb,) float32, std units"),
    "pose": FieldSpec("params/pose", _plain, "(6,) float32 yaw, pitch, roll (rad), tx, ty, tz (mm)"),
    "light": FieldSpec("params/light", _plain, "(9,3) float32 SH lighting"),
    "background": FieldSpec("params/background", _plain, "(K_bg,) float32: format 2 BACKGROUND_FIELDS, "
                            "format 1 a linear RGB colour (3,)"),
    "material": FieldSpec("params/material", _plain, "(3,) float32 specular, shininess, occlusion; format 1: "
                          "zeros (its images had neither)", np.zeros(len(MATERIAL_FIELDS), np.float32)),
    "facial_hair": FieldSpec("params/facial_hair", _plain, "(11,) float32 brows and stubble (FACIAL_HAIR_FIELDS); "
                             "format 1: zeros (its model's albedo held its brows)",
                             np.zeros(len(FACIAL_HAIR_FIELDS), np.float32)),
    "intrinsics": FieldSpec("camera/intrinsics", _plain, "(3,3) float32 pinhole K, pixels"),
    "landmarks": FieldSpec("landmarks/xy", _plain, "(68,2) float32 pixels"),
    "landmarks_visible": FieldSpec("landmarks/visible", _plain, "(68,) bool"),
    "index": FieldSpec("index", lambda a: _plain(np.int64(a)), "() int64 global sample index"),
}
"""Every item key but ``params`` (the normalized flat vector of :data:`PARAM_VECTOR`).

Conversions are numpy then ``torch.from_numpy``: no torch op runs per item, so an item's cost
never depends on torch's intra-op thread pool (contended on a small machine).
"""

DEFAULT_FIELDS = ("image", "depth", "mask", "params", "landmarks")
_FORMAT1 = {spec.dataset: spec.format1 for spec in FIELDS.values() if spec.format1 is not None}
_MODEL_DEPENDENT = {"params", "identity", "expression", "albedo"}  # meaningless across different models


# ---------------------------------------------------------------- split

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_unit(seed: int, indices: Iterable[int] | np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per sample, fixed by ``(seed, index)``: the split key.

    ``splitmix64(splitmix64(seed) XOR index) >> 11``, scaled by 2**-53; reproducible in any language.
    """
    key = _splitmix64(np.array([seed], dtype=np.uint64))
    h = _splitmix64(np.asarray(indices, dtype=np.uint64) ^ key)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def in_val(seed: int, indices: Iterable[int] | np.ndarray, val_fraction: float) -> np.ndarray:
    """Boolean mask: which samples belong to the validation split."""
    return split_unit(seed, indices) < val_fraction


# ---------------------------------------------------------------- parameter normalisation

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
        """Physical blocks (B, size) plus ``intrinsics`` (B, 3, 3) → normalised vector (B, dim) (numpy or torch)."""
        return self.normalize(self.flatten(self._coded(blocks)))

    def decode(self, estimate: Array, intrinsics: Array) -> dict[str, Array]:
        """Normalised (B, dim) estimate and K (B, 3, 3) → physical blocks (numpy or torch; differentiable)."""
        blocks = dict(self.unflatten(self.denormalize(estimate)))
        if "pose" in blocks:
            if isinstance(estimate, torch.Tensor):
                intrinsics = torch.as_tensor(intrinsics, dtype=estimate.dtype, device=estimate.device)
            blocks["pose"] = decode_pose(blocks["pose"], intrinsics)
        return blocks

    def to_params(self, estimate: Array, intrinsics: Array) -> dict[str, np.ndarray]:
        """Normalised (B, dim) estimate (torch or numpy) and K (B, 3, 3) → physical blocks as contiguous
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


# ---------------------------------------------------------------- the dataset

@dataclass(frozen=True)
class _Shard:
    path: Path
    first_index: int
    count: int
    source: int


@dataclass(frozen=True)
class _Source:
    path: Path  # dataset directory or shard file, as given
    seed: int
    model_sha256: str
    shards: tuple[_Shard, ...]


class ShardDataset(Dataset):
    """Samples of one or more synthface datasets (directories and/or shard files) as dicts of tensors.

    ``fields``: keys of :data:`FIELDS` and/or ``"params"`` (the flat :data:`PARAM_VECTOR` vector:
    encoded by :meth:`ParameterNormalizer.encode` when a normalizer is in use, else the raw
    concatenation); ``"index"`` is always included. ``normalize``:
    ``"fit"`` fits a :class:`ParameterNormalizer` on the *training* split of ``paths`` (so a val
    dataset built the same way gets the same one), an instance uses it (e.g. from a checkpoint),
    ``None`` returns raw parameters. ``max_open_files`` bounds open HDF5 files per process (LRU).
    ``augment``: camera degradations applied to ``image`` as it is read (:mod:`synthface.augment`),
    drawn from ``(augment_seed, the dataset's seed, sample index, epoch)`` — set the epoch with
    :meth:`set_epoch` so each pass sees new degradations; None (default) returns the clean render.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], split: Split = "train",
                 val_fraction: float = 0.05, fields: Sequence[str] = DEFAULT_FIELDS,
                 normalize: ParameterNormalizer | Literal["fit"] | None = "fit", max_open_files: int = 64,
                 augment: Degradations | None = None, augment_seed: int = 0) -> None:
        if split not in ("train", "val", "all"):
            raise ConfigError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if not 0.0 <= val_fraction <= 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1], got {val_fraction}")
        unknown = [f for f in fields if f != "params" and f not in FIELDS]
        if unknown:
            raise ConfigError(f"unknown fields {unknown}; choose from params, {', '.join(FIELDS)}")
        if max_open_files < 1:
            raise ConfigError(f"max_open_files must be at least 1, got {max_open_files}")
        if augment is not None and not isinstance(augment, Degradations):
            raise ConfigError(f"augment must be a synthface.augment.Degradations or None, got {augment!r}")
        self.split, self.val_fraction, self.max_open_files = split, float(val_fraction), max_open_files
        self.augment, self.augment_seed, self.epoch = augment, int(augment_seed), 0
        self.fields = tuple(dict.fromkeys([*fields, "index"]))  # ordered, no duplicates
        self._reads = tuple(dict.fromkeys(
            [FIELDS[n].dataset for n in (*PARAM_VECTOR, "intrinsics") if "params" in self.fields]
            + [FIELDS[f].dataset for f in self.fields if f != "params"]))

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = tuple(Path(p) for p in paths)
        self._sources = [_open_source(p, k) for k, p in enumerate(self.paths)]
        if not self._sources:
            raise ConfigError("ShardDataset needs at least one dataset directory or shard file")
        shapes = _check_sources(self._sources, self._reads, self.fields)
        self._shards = [s for src in self._sources for s in src.shards]
        counts = np.array([s.count for s in self._shards], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])  # shard k holds positions [off[k], off[k+1])
        val = self._val_mask()
        keep = {"train": ~val, "val": val, "all": np.ones_like(val)}[split]
        self._items = np.flatnonzero(keep).astype(np.int64)

        if "params" not in self.fields or normalize is None:
            self.normalizer: ParameterNormalizer | None = None
        elif isinstance(normalize, ParameterNormalizer):
            want = tuple(int(np.prod(shapes[FIELDS[n].dataset])) for n in PARAM_VECTOR)
            if normalize.names != PARAM_VECTOR or normalize.sizes != want:
                got = dict(zip(normalize.names, normalize.sizes, strict=True))
                raise ConfigError(f"the given normalizer's layout {got} does not match these shards' "
                                  f"{dict(zip(PARAM_VECTOR, want, strict=True))}; it was fitted on other data")
            self.normalizer = normalize
        elif normalize == "fit":
            self.normalizer = self._fit_normalizer(~val)
        else:
            raise ConfigError(f"normalize must be 'fit', a ParameterNormalizer or None, got {normalize!r}")

        self._pid: int | None = None
        self._handles: OrderedDict[int, tuple[h5py.File, dict[str, h5py.Dataset]]] = OrderedDict()
        self._inherited: list[Any] = []

    # ---- index

    def _val_mask(self) -> np.ndarray:
        """Over all positions (every source, every shard): is the sample in the validation split?"""
        parts = [in_val(self._sources[s.source].seed, np.arange(s.first_index, s.first_index + s.count),
                        self.val_fraction) for s in self._shards]
        return np.concatenate(parts) if parts else np.zeros(0, bool)

    def __len__(self) -> int:
        return len(self._items)

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a ShardDataset of {len(self)} samples")
        pos = int(self._items[i])
        k = int(np.searchsorted(self._offsets, pos, side="right")) - 1
        return k, pos - int(self._offsets[k])

    @property
    def sample_indices(self) -> np.ndarray:
        """The stored global sample index of every item, in item order (cheap: no file is read)."""
        k = np.searchsorted(self._offsets, self._items, side="right") - 1
        first = np.array([s.first_index for s in self._shards], np.int64)
        return first[k] + (self._items - self._offsets[k])

    @property
    def source_ids(self) -> np.ndarray:
        """Which entry of ``paths`` every item comes from."""
        k = np.searchsorted(self._offsets, self._items, side="right") - 1
        return np.array([s.source for s in self._shards], np.int64)[k]

    # ---- reading

    def _datasets(self, k: int) -> dict[str, h5py.Dataset]:
        """The read datasets of shard ``k``, opened by *this* process (never a handle inherited over fork)."""
        pid = os.getpid()
        if self._pid != pid:
            # Keep inherited handles referenced but untouched: closing them here would call into HDF5
            # with the parent's file state.
            if self._handles:
                self._inherited.append(self._handles)
            self._handles, self._pid = OrderedDict(), pid
        entry = self._handles.get(k)
        if entry is not None:
            self._handles.move_to_end(k)
            return entry[1]
        path = self._shards[k].path
        try:
            # No chunk cache: random access never reads a chunk twice, and caching one MiB per dataset
            # per open file per worker only costs memory.
            handle = h5py.File(path, "r", rdcc_nbytes=0)
        except OSError as exc:
            raise ShardError(f"{path}: cannot open shard ({exc}); run 'synthface verify' on its dataset") from exc
        try:
            # Looked up once: f[name] costs ~100 µs (more than reading a 200x200 image chunk).
            datasets = {name: handle[name] for name in self._reads if name in handle or name not in _FORMAT1}
        except (KeyError, OSError) as exc:
            handle.close()
            raise ShardError(f"{path}: cannot open its datasets {list(self._reads)} ({exc}); "
                             "run 'synthface verify' on its dataset") from exc
        self._handles[k] = (handle, datasets)
        if len(self._handles) > self.max_open_files:
            self._handles.popitem(last=False)[1][0].close()
        return datasets

    def read_raw(self, i: int) -> dict[str, np.ndarray]:
        """Item ``i`` as stored (numpy, shard dataset path → row), before conversion to tensors."""
        k, row = self._locate(i)
        shard = self._shards[k]
        datasets = self._datasets(k)
        name = ""
        try:
            raw = {name: _FORMAT1[name] for name in self._reads if name not in datasets}
            for name, dset in datasets.items():
                raw[name] = dset[row]
        except (OSError, ValueError, RuntimeError) as exc:
            raise ShardError(f"{shard.path}: cannot read {name!r} of sample {shard.first_index + row} "
                             f"(row {row}): {exc}; the shard is corrupt, run 'synthface verify' and "
                             "regenerate it") from exc
        if int(raw["index"]) != shard.first_index + row:
            raise ShardError(f"{shard.path}: row {row} holds sample {int(raw['index'])}, expected "
                             f"{shard.first_index + row}; the shard does not match its manifest")
        return raw

    def set_epoch(self, epoch: int) -> None:
        """Which pass over the data this is: the degradations (``augment``) are drawn per epoch."""
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        raw = self.read_raw(i)
        item = {}
        for name in self.fields:
            if name == "params":
                blocks = {n: raw[FIELDS[n].dataset] for n in PARAM_VECTOR}
                if self.normalizer is not None:
                    k = raw[FIELDS["intrinsics"].dataset].astype(np.float64)
                    vec = self.normalizer.encode({**blocks, "intrinsics": k}).astype(np.float32)
                else:
                    vec = np.concatenate([blocks[n] for n in PARAM_VECTOR])
                item["params"] = torch.from_numpy(vec)
            else:
                item[name] = FIELDS[name].convert(raw[FIELDS[name].dataset])
        if self.augment is not None and "image" in item:
            k, _ = self._locate(i)
            seed = self._sources[self._shards[k].source].seed
            rng = np.random.default_rng([self.augment_seed, seed, int(raw["index"]), self.epoch])
            item["image"] = degrade(item["image"], rng, self.augment)
        return item

    def _fit_normalizer(self, train: np.ndarray) -> ParameterNormalizer:
        """:meth:`ParameterNormalizer.fit` over the training split's stored parameters, one shard at a time."""
        return ParameterNormalizer.fit(self._train_parameters(train))

    def _train_parameters(self, train: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        """Per shard with training rows: its stored parameter blocks and K (params are small: one read per shard)."""
        for k, shard in enumerate(self._shards):
            rows = train[self._offsets[k]:self._offsets[k + 1]]
            if not rows.any():
                continue
            try:
                with h5py.File(shard.path, "r") as f:
                    blocks = {m: f[FIELDS[m].dataset][()][rows] for m in (*PARAM_VECTOR, "intrinsics")}
            except (OSError, KeyError) as exc:
                raise ShardError(f"{shard.path}: cannot read parameters ({exc}); run 'synthface verify'") from exc
            yield blocks

    # ---- processes

    def close(self) -> None:
        """Close the HDF5 files this process opened (they reopen on the next read)."""
        if self._pid == os.getpid():
            for handle, _ in self._handles.values():
                handle.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_pid=None, _handles=OrderedDict(), _inherited=[])  # a handle never crosses processes
        return state

    def __repr__(self) -> str:
        return (f"ShardDataset({len(self)} samples, split={self.split!r}, val_fraction={self.val_fraction}, "
                f"paths={[str(p) for p in self.paths]})")


# ---------------------------------------------------------------- construction helpers

def _open_source(path: Path, source: int) -> _Source:
    """:func:`~synthface.shards.open_source`, with each shard tagged by the source's position."""
    src = open_source(path)
    return _Source(path, src.seed, src.model_sha256,
                   tuple(_Shard(s.path, s.first_index, s.count, source) for s in src.shards))


def _check_sources(sources: list[_Source], reads: Sequence[str], fields: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Refuse the same file twice, missing datasets, shapes that would not batch, parameters of different models.

    Returns the per-sample shape of every dataset in ``reads``.
    """
    seen: dict[Path, Path] = {}
    for src in sources:
        for s in src.shards:
            real = s.path.resolve()
            if real in seen:
                raise ShardError(f"{s.path}: given twice (also via {seen[real]}); each sample must appear once")
            seen[real] = src.path
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for src in sources:
        if not src.shards:
            continue
        path = src.shards[0].path
        try:
            with h5py.File(path, "r") as f:
                missing = [r for r in reads if r not in f and r not in _FORMAT1]
                got = {r: f[r].shape[1:] if r in f else _FORMAT1[r].shape for r in reads if r in f or r in _FORMAT1}
        except OSError as exc:
            raise ShardError(f"{path}: not a readable HDF5 shard ({exc}); regenerate it") from exc
        if missing:
            raise ShardError(f"{path}: no dataset {', '.join(missing)} (requested fields {list(fields)}); "
                             "regenerate with the matching --extras or drop those fields")
        for r, shape in got.items():
            want, where = shapes.setdefault(r, (shape, path))
            if shape != want:
                raise ShardError(f"{path}: {r} has per-sample shape {shape} but {where} has {want}; "
                                 "datasets of different image sizes or models cannot be batched together")
    if _MODEL_DEPENDENT & set(fields) and len({s.model_sha256 for s in sources}) > 1:
        names = ", ".join(f"{s.path} ({s.model_sha256[:12]}…)" for s in sources)
        raise ShardError(f"parameters of different morphable models cannot be mixed: {names}")
    for a_i, a in enumerate(sources):
        for b in sources[a_i + 1:]:
            if a.seed == b.seed and _overlap(a, b):
                warnings.warn(f"{a.path} and {b.path} share seed {a.seed} and sample indices: those samples draw "
                              "the same random numbers (duplicated identities, poses, ...)", stacklevel=3)
    return {r: shape for r, (shape, _) in shapes.items()}


def _overlap(a: _Source, b: _Source) -> bool:
    return any(s.first_index < t.first_index + t.count and t.first_index < s.first_index + s.count
               for s in a.shards for t in b.shards)

