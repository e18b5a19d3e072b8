"""Re-check a dataset against its manifest: files, sha256, format, shapes, indices, finite values."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filters for h5py)
import numpy as np

from .resources import file_sha256
from .shards import READABLE_SHARD_VERSIONS, SHARD_FORMAT, read_manifest

_FIXED = {  # dataset → (per-sample shape given image size s, dtype kind)
    "image": (lambda s: (s, s, 3), "u"), "depth": (lambda s: (s, s), "f"), "mask": (lambda s: (s, s), "u"),
    "landmarks/xy": (lambda s: (68, 2), "f"), "landmarks/visible": (lambda s: (68,), "b"),
    "params/pose": (lambda s: (6,), "f"), "params/light": (lambda s: (9, 3), "f"),
    "camera/intrinsics": (lambda s: (3, 3), "f"), "index": (lambda s: (), "i"),
    "params/identity": (None, "f"), "params/expression": (None, "f"), "params/albedo": (None, "f"),
}
_FORMAT2 = {  # datasets format 2 added (format 1 shards lack them)
    "segmentation": (lambda s: (s, s), "u"), "params/material": (lambda s: (3,), "f"),
    "params/background_shapes": (None, "f"), "params/background_sha256": (lambda s: (), "S"),
    "params/occluders": (None, "f"), "params/hair": (None, "f"), "params/facial_hair": (None, "f"),
}
_FINITE = ("depth", "landmarks/xy", "params/identity", "params/expression", "params/albedo", "params/pose",
           "params/light", "camera/intrinsics")


@dataclass(frozen=True)
class Problem:
    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


def verify_dataset(out_dir: str | Path, *, on_shard: Callable[[str], None] | None = None) -> list[Problem]:
    """Every problem found (empty list: the dataset is intact). Raises ShardError if there is no manifest."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    problems: list[Problem] = []
    size = int(manifest.get("image_size", 0))
    expected_next = 0
    widths: dict[str, tuple[int, ...]] = {}
    for entry in manifest.get("shards", []):
        name = entry["file"]
        if on_shard is not None:
            on_shard(name)
        if entry["first_index"] != expected_next:
            problems.append(Problem("manifest.json", f"{name} starts at {entry['first_index']}, expected "
                                                     f"{expected_next}"))
        expected_next = entry["first_index"] + entry["count"]
        path = out / name
        if not path.is_file():
            problems.append(Problem(name, "missing"))
            continue
        if file_sha256(path) != entry["sha256"]:
            problems.append(Problem(name, "sha256 differs from the manifest (corrupted or modified)"))
        problems += [Problem(name, p) for p in _check_shard(path, entry, size, widths, manifest)]
    if expected_next != manifest.get("n"):
        problems.append(Problem("manifest.json", f"shards hold {expected_next} samples, manifest says "
                                                 f"{manifest.get('n')}"))
    return problems


def _check_shard(path: Path, entry: dict, size: int, widths: dict[str, tuple[int, ...]],
                 manifest: dict) -> list[str]:
    out: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != SHARD_FORMAT or attrs.get("format_version") not in READABLE_SHARD_VERSIONS:
                return [f"not a synthface shard of version {'/'.join(map(str, READABLE_SHARD_VERSIONS))} "
                        f"(format={attrs.get('format')!r}, version={attrs.get('format_version')!r})"]
            for key in ("first_index", "count"):
                if int(attrs.get(key, -1)) != entry[key]:
                    out.append(f"attribute {key}={attrs.get(key)} but the manifest says {entry[key]}")
            # The run it belongs to: a shard copied in from another run (seed, model, config) is foreign.
            model = manifest.get("model") or {}
            for key, want in (("seed", manifest.get("seed")), ("model_sha256", model.get("sha256"))):
                if want is not None and str(attrs.get(key)) != str(want):
                    out.append(f"attribute {key}={attrs.get(key)} but the manifest says {want} "
                               "(a shard of another run)")
            try:
                config = json.loads(str(attrs.get("config")))
            except ValueError:
                config = None
            if "config" in manifest and config != manifest["config"]:
                out.append("attribute config differs from the manifest's (a shard of another run)")
            n = entry["count"]
            fixed = _FIXED | (_FORMAT2 if attrs.get("format_version") >= 2 else {})
            for name, (shape_of, kind) in fixed.items():
                if name not in f:
                    out.append(f"dataset {name} missing")
                    continue
                ds = f[name]
                want = shape_of(size) if shape_of else tuple(widths.setdefault(name, ds.shape[1:]))
                if ds.shape != (n, *want) or ds.dtype.kind != kind:
                    out.append(f"dataset {name} is {ds.shape} {ds.dtype}, expected {(n, *want)} of kind {kind!r}")
                    continue
                if name in _FINITE and not np.isfinite(ds[()]).all():
                    out.append(f"dataset {name} has non-finite values")
            if "index" in f and f["index"].shape == (n,):
                want_index = np.arange(entry["first_index"], entry["first_index"] + n)
                if not np.array_equal(f["index"][()], want_index):
                    out.append("index does not run from first_index in steps of 1")
    except (OSError, KeyError, ValueError) as exc:
        out.append(f"unreadable ({exc})")
    return out
