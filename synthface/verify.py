"""Re-check a dataset against its manifest: files, sha256, format, shapes, indices, finite values."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filters for h5py)
import numpy as np

from .params import ModelDims
from .resources import file_sha256
from .shards import DATASET_SINCE, READABLE_SHARD_VERSIONS, SHARD_FORMAT, read_manifest, shard_layout

_MODEL_WIDTHS = ("params/identity", "params/expression", "params/albedo")
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
            version = attrs.get("format_version")
            if attrs.get("format") != SHARD_FORMAT or version not in READABLE_SHARD_VERSIONS:
                return [f"not a synthface shard of version {'/'.join(map(str, READABLE_SHARD_VERSIONS))} "
                        f"(format={attrs.get('format')!r}, version={version!r})"]
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
            # The model's coefficient counts come from the first shard: every other one must agree.
            for name in _MODEL_WIDTHS:
                if name in f:
                    widths.setdefault(name, f[name].shape[1:])
            dims = ModelDims(*(int(widths.get(name, (0,))[0]) for name in _MODEL_WIDTHS))
            extras = tuple((manifest.get("job") or {}).get("extras", ()))
            layout = shard_layout(dims, size, extras)
            for name, field in layout.items():
                if version < DATASET_SINCE.get(name, 1):
                    continue
                if name not in f:
                    out.append(f"dataset {name} missing")
                    continue
                ds = f[name]
                # format 1's params/background was a colour (3,): its width is not checked there
                shape = ds.shape[1:] if version < 2 and name == "params/background" else field.shape
                if ds.shape != (n, *shape) or ds.dtype.kind != field.dtype.kind:
                    out.append(f"dataset {name} is {ds.shape} {ds.dtype}, expected {(n, *shape)} of kind "
                               f"{field.dtype.kind!r}")
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
