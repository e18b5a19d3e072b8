"""HDF5 shards (format version 4; versions 1 to 3 still read) and the dataset manifest.

A shard is written under a temporary name, fsynced, then renamed: a file that
exists under its final name is complete. Images, depth and masks are chunked
one sample per chunk, so a DataLoader's random read decompresses one sample.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from .errors import ShardError, SynthfaceError
from .model import N_LANDMARKS, SEGMENTATION_CLASSES, MorphableModel
from .params import ModelDims, param_layout
from .render import RenderOutput

SHARD_FORMAT = "synthface-shard"
SHARD_VERSION = 4
READABLE_SHARD_VERSIONS = (1, 2, 3, 4)
"""Format 1: face-only scene, ``params/background`` a colour (N, 3). Format 2 adds ``segmentation``
(class ids, table in its ``classes`` attribute), ``params/material``, ``params/background_shapes``,
``params/background_sha256`` and gives ``params/background`` the columns of
:data:`synthface.params.BACKGROUND_FIELDS`; ``image`` is anti-aliased over a textured background;
``depth`` covers every rendered surface and ``mask`` the face region (the same pixels as format 1's
for a face-only model). Format 3 adds ``params/clothes`` and the segmentation class ``clothes`` (the
bundled model's bust). Format 4 adds ``params/eyes`` (the iris drawn per pixel on models with
``iris_coordinates``) and ``params/shadow`` (cast shadows); :data:`DATASET_SINCE` lists what each version added."""
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "synthface-dataset"
MANIFEST_VERSION = 1


CODECS: dict[str, Any] = {
    "blosc-lz4": lambda: hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "blosc-zstd": lambda: hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "blosc-zstd1": lambda: hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "gzip": lambda: {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "lzf": lambda: {"compression": "lzf", "shuffle": True},
    "none": lambda: {},
}
"""Lossless codecs by name. Blosc codecs need ``import hdf5plugin`` before h5py reads the file."""
DEFAULT_CODEC = "blosc-zstd1"
"""Zstd at level 1: 123 KB a sample at 200 px on format 4's renders, where LZ4 needs 156 KB, at about the
same write cost (a few % of a render) and thousands of reads/s (benchmarks/bench_codecs.py)."""


@dataclass(frozen=True)
class ShardField:
    """One dataset of a shard: per-sample shape and dtype; ``per_sample`` = chunked one sample a chunk."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    per_sample: bool = False


RENDER_FIELDS = {  # RenderOutput attribute → shard dataset path
    "image": "image", "depth": "depth", "mask": "mask", "segmentation": "segmentation",
    "landmarks_xy": "landmarks/xy", "landmarks_visible": "landmarks/visible",
    "normals": "normals", "pncc": "pncc",
}


DATASET_SINCE = {**dict.fromkeys(("segmentation", "params/material", "params/background_shapes",
                                   "params/background_sha256", "params/occluders", "params/hair",
                                   "params/facial_hair"), 2),
                 "params/clothes": 3, **dict.fromkeys(("params/eyes", "params/shadow"), 4)}
"""The shard format version that added each dataset (older shards lack it; format 1's ``params/background``
held a colour). Every other dataset is in every version."""


def shard_layout(model: MorphableModel | ModelDims, image_size: int,
                 extras: tuple[str, ...] = ()) -> dict[str, ShardField]:
    """Every dataset of a shard for ``model`` at ``image_size``: README's shard table plus ``extras``."""
    s = image_size
    fields = [
        ShardField("image", (s, s, 3), np.dtype(np.uint8), True),
        ShardField("depth", (s, s), np.dtype(np.float32), True),
        ShardField("mask", (s, s), np.dtype(np.uint8), True),
        ShardField("segmentation", (s, s), np.dtype(np.uint8), True),
        ShardField("landmarks/xy", (N_LANDMARKS, 2), np.dtype(np.float32)),
        ShardField("landmarks/visible", (N_LANDMARKS,), np.dtype(bool)),
    ]
    fields += [ShardField(f.shard_path, f.shape, f.dtype) for f in param_layout(model).values()]
    fields += [ShardField(e, (s, s, 3), np.dtype(np.float32), True) for e in extras]
    return {f.path: f for f in fields}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    """Where ``final`` is written before its rename (hidden, per process)."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, data: bytes, *, before_rename: Callable[[], None] | None = None) -> None:
    """Write, fsync and rename, so ``path`` is either absent, the old file, or the whole new one.

    The one atomic write of synthface (shards' metadata, manifests, checkpoints, previews, sample files,
    reports). A ``path`` that exists but is not a regular file (``/dev/null``, a FIFO, a terminal) is
    written directly: renaming over it would replace the device with a file. On an OSError the
    temporary file is removed and the error re-raised for the caller to word.
    """
    try:
        special = path.exists() and not path.is_file() and not path.is_dir()
    except OSError:  # e.g. a symlink loop: let open() below give the error
        special = False
    if special:
        with open(path, "wb") as f:
            f.write(data)
        return
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, before_rename: Callable[[], None] | None = None) -> None:
    """:func:`atomic_write` of UTF-8 text; failures become a ShardError that says what to check."""
    try:
        atomic_write(path, text.encode(), before_rename=before_rename)
    except OSError as exc:
        raise ShardError(f"cannot write {path}: {exc.strerror or exc}; check free space and permissions") from exc


class ShardWriter:
    """Writes one shard of ``count`` samples, batch by batch, then commits it atomically.

    ``with ShardWriter(...) as w: w.write(params, rendered); ...`` — leaving the block normally
    commits (all ``count`` samples must have been written); an exception discards the shard.

    The HDF5 file is assembled in memory (HDF5's core driver; its compressed size, which
    ``--shard-size`` bounds) and reaches the disk in one :func:`atomic_write`. Why: HDF5 meets a full
    disk in the middle of its own writes with errors it cannot recover from (RuntimeErrors from
    flushes, then a crash at exit); a plain write of finished bytes fails with an ``OSError``, and
    the temporary file is removed.
    """

    def __init__(self, path: Path, *, model: MorphableModel, image_size: int, first_index: int, count: int,
                 attrs: Mapping[str, Any], extras: tuple[str, ...] = (), codec: str = DEFAULT_CODEC) -> None:
        if codec not in CODECS:
            raise ShardError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        self.path, self.count, self.first_index = Path(path), count, first_index
        self.layout = shard_layout(model, image_size, extras)
        self.param_paths = {k: f.shard_path for k, f in param_layout(model).items()}
        self.written = 0
        self.sha256: str | None = None
        try:
            self.file = h5py.File(f"{self.path.name}.in-memory", "w", libver="latest", driver="core",
                                  backing_store=False)
            for f in self.layout.values():
                chunks = (1, *f.shape) if f.per_sample else None
                # Fletcher-32 per chunk: a chunk the codec could not shrink is stored raw, and damage to it
                # would otherwise read back as plausible pixels.
                opts = {**CODECS[codec](), "fletcher32": True} if f.per_sample else {}
                self.file.create_dataset(f.path, shape=(count, *f.shape), dtype=f.dtype, chunks=chunks, **opts)
            self.file["segmentation"].attrs["classes"] = json.dumps(SEGMENTATION_CLASSES)
            self.file.attrs.update({"format": SHARD_FORMAT, "format_version": SHARD_VERSION,
                                    "first_index": first_index, "count": count, **attrs})
        except OSError as exc:
            self._discard()
            raise ShardError(f"cannot create shard {self.path}: {exc}; check free space and permissions") from exc

    def write(self, params: Mapping[str, np.ndarray], rendered: RenderOutput) -> None:
        """Append one batch: a parameter dict and the matching render output (same order)."""
        n = len(params["index"])
        if self.written + n > self.count:
            raise ShardError(f"shard {self.path.name} holds {self.count} samples; got {self.written + n}")
        expect = np.arange(self.first_index + self.written, self.first_index + self.written + n)
        if not np.array_equal(params["index"], expect):
            raise ShardError(f"shard {self.path.name}: samples must arrive in index order")
        arrays = {path: params[key] for key, path in self.param_paths.items()}
        arrays.update({path: getattr(rendered, attr) for attr, path in RENDER_FIELDS.items()
                       if path in self.layout})
        sl = slice(self.written, self.written + n)
        try:
            for path, data in arrays.items():
                self.file[path][sl] = data
        except OSError as exc:
            raise ShardError(f"cannot write shard {self.path}: {exc}; check free space") from exc
        self.written += n

    def commit(self) -> str:
        """Write the finished file atomically (temporary name, fsync, rename); returns its sha256."""
        if self.written != self.count:
            raise ShardError(f"shard {self.path.name}: {self.written} of {self.count} samples written")
        self.file.flush()
        image = self.file.id.get_file_image()
        self.file.close()
        try:
            atomic_write(self.path, image)
        except OSError as exc:
            raise ShardError(f"cannot finish shard {self.path}: {exc.strerror or exc}; check free space") from exc
        self.sha256 = hashlib.sha256(image).hexdigest()
        return self.sha256

    def _discard(self) -> None:
        file = getattr(self, "file", None)
        if file is not None and file.id.valid:
            file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._discard()


def read_attrs(path: Path) -> dict[str, Any]:
    """A shard's attributes, checking it is a synthface shard of this format version."""
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
    except OSError as exc:
        raise ShardError(f"{path}: not a readable HDF5 shard ({exc}); regenerate it") from exc
    if attrs.get("format") != SHARD_FORMAT:
        raise ShardError(f"{path}: not a synthface shard (format={attrs.get('format')!r})")
    if int(attrs.get("format_version", -1)) not in READABLE_SHARD_VERSIONS:
        raise ShardError(f"{path}: shard format version {attrs.get('format_version')} is not one of "
                         f"{', '.join(map(str, READABLE_SHARD_VERSIONS))}; regenerate it with this synthface")
    return attrs


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        if (Path(out_dir) / PLAN).is_file():
            raise ShardError(f"{out_dir} is a dataset still being generated, or an interrupted run (no manifest "
                             f"yet); wait for it, or run 'synthface generate --resume --out {out_dir}'") from exc
        raise ShardError(f"{path}: no manifest; is {out_dir} a synthface dataset?") from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest ({exc}); run 'synthface verify'") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{path}: not a synthface dataset manifest")
    shards = manifest.get("shards")
    entry = {"file": str, "first_index": int, "count": int}
    if not isinstance(shards, list) or not shards or not all(
            isinstance(sh, dict) and all(isinstance(sh.get(k), t) for k, t in entry.items()) for sh in shards):
        raise ShardError(f"{path}: the manifest's shard list is missing or malformed; "
                         "regenerate the dataset (or restore manifest.json)")
    return manifest


@dataclass(frozen=True)
class ShardRef:
    """One shard of a source: its file and the global indices it holds."""

    path: Path
    first_index: int
    count: int


@dataclass(frozen=True)
class DataSource:
    """What :func:`open_source` found: a dataset directory or a lone shard file, checked."""

    path: Path
    """As given: a dataset directory or a shard file."""
    seed: int
    model_sha256: str
    shards: tuple[ShardRef, ...]
    manifest: dict[str, Any] | None
    """The directory's manifest; None for a shard file."""

    def config(self) -> dict[str, Any]:
        """The generator config the data was made with (``SamplingConfig.to_dict()``'s layout)."""
        if self.manifest is not None:
            return dict(self.manifest.get("config") or {})
        raw = read_attrs(self.shards[0].path).get("config")
        return json.loads(raw) if raw else {}


def open_source(path: Path) -> DataSource:
    """A dataset directory (via its manifest) or one shard file (via its attributes), validated once:
    manifest format and version, the shard list, each listed shard present and of this run (first
    index, count, seed, model). Every problem is a :class:`ShardError` naming the file and the fix.
    The readers (``ShardDataset``, ``info``, ``train``, ``evaluate``) open data only through this."""
    if path.is_dir():
        manifest = read_manifest(path)
        where = path / MANIFEST
        if manifest.get("format_version") != MANIFEST_VERSION or manifest.get("shard_format") != SHARD_FORMAT:
            raise ShardError(f"{where}: manifest format_version {manifest.get('format_version')!r} / shard format "
                             f"{manifest.get('shard_format')!r} is not {MANIFEST_VERSION} / {SHARD_FORMAT}; "
                             "regenerate the dataset with this synthface")
        try:
            seed, sha = int(manifest["seed"]), str(manifest["model"]["sha256"])
            entries = [(e["file"], int(e["first_index"]), int(e["count"])) for e in manifest["shards"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardError(f"{where}: malformed manifest ({exc!r}); run 'synthface verify'") from exc
        shards = []
        for name, first, count in entries:
            file = path / name
            if not file.is_file():
                raise ShardError(f"{file}: shard missing (listed in {where}); "
                                 f"finish it with 'synthface generate --resume --out {path}'")
            attrs = read_attrs(file)
            got = (int(attrs.get("first_index", -1)), int(attrs.get("count", -1)), int(attrs.get("seed", -1)),
                   str(attrs.get("model_sha256", "")))
            if got != (first, count, seed, sha):
                raise ShardError(f"{file}: attributes (first_index, count, seed, model) = {got[:3]} do not match "
                                 f"{where} ({first}, {count}, {seed}); the shard belongs to another run")
            shards.append(ShardRef(file, first, count))
        return DataSource(path, seed, sha, tuple(shards), manifest)
    if path.is_file():
        attrs = read_attrs(path)
        try:
            shard = ShardRef(path, int(attrs["first_index"]), int(attrs["count"]))
            return DataSource(path, int(attrs["seed"]), str(attrs["model_sha256"]), (shard,), None)
        except KeyError as exc:
            raise ShardError(f"{path}: shard attribute {exc} missing; regenerate it") from exc
    raise ShardError(f"{path}: no such dataset directory or shard file")



PLAN = ".synthface-run.json"
"""The plan of a generate run that has not written its manifest yet (see :mod:`synthface.generate`)."""
LOCK = ".synthface.lock"
"""Lock file of a run directory (generate's --out, train's --out): see :func:`run_lock`."""


@contextmanager
def run_lock(out: Path, command: str) -> Iterator[None]:
    """Hold ``out/.synthface.lock`` exclusively while ``synthface <command>`` writes into ``out``.

    ``flock`` locks belong to the process: the kernel drops them when it dies (also by kill -9), so
    a lock file left behind by a killed run is stale by construction and the next run simply takes it.
    """
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # read-only mount, no write permission, chattr +i, full disk
            raise SynthfaceError(f"--out {out} is not writable ({exc.strerror or exc}); check its permissions "
                                 "and mount, or choose another --out") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SynthfaceError(f"{out} is in use by another synthface run ({holder}); wait for it to "
                                 "finish, or choose another --out") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break  # still the file at that path (not one a finishing run just removed)
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{command}, pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError as exc:
            raise SynthfaceError(f"--out {out} is not writable ({exc.strerror or exc}); free space there or "
                                 "choose another --out") from exc
        yield
    finally:
        # The file means something only while locked; openers racing with this unlink re-check the inode.
        path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def locked_run_dir(out: Path, command: str) -> Iterator[None]:
    """Create ``out`` if needed and hold its :func:`run_lock` while the block runs; a directory
    created here and still empty afterwards (a run refused before it wrote) is removed again."""
    created = not out.exists()
    if created and out.is_symlink():  # a dangling link, or a loop (a → a): "File exists" would puzzle
        raise SynthfaceError(f"--out {out} is a symbolic link to nothing (dangling or a loop); remove it or "
                             "point it at a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SynthfaceError(f"cannot create --out {out}: {exc.strerror or exc}; check the path and permissions") \
            from exc
    try:
        with run_lock(out, command):
            yield
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
