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

Split: :mod:`synthface.split` (a hash of each sample's seed and index). Targets: the ``params``
item is the flat vector of :mod:`synthface.targets`, normalized by its ``ParameterNormalizer``.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
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
from .params import FACIAL_HAIR_FIELDS, MATERIAL_FIELDS
from .shards import open_source
from .split import in_val
from .targets import PARAM_VECTOR, ParameterNormalizer

Split = Literal["train", "val", "all"]


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

