"""Helpers shared by the test modules (fixtures live in conftest.py): the CLI in-process, the
one-line-error check, a small dataset on disk and its arrays."""

from __future__ import annotations

import json
import struct
import zlib

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
from click.testing import CliRunner

from synthface.cli import main

SIZE = 32
"""Image size of the small test datasets."""


def cli(*args: object):
    """``synthface ARGS`` in this process (click's CliRunner); exceptions propagate."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_user_error(result, fragment: str) -> None:
    """A non-zero exit whose stderr ends in exactly one ``error:`` line containing ``fragment``, no traceback."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1
    assert fragment in lines[-1]
    assert "Traceback" not in result.output


def gen(out, model_file, *extra: str, n: int = 10):
    """``synthface generate`` of ``n`` samples at :data:`SIZE` px into ``out``; asserts success."""
    result = cli("generate", "--n", str(n), "--out", str(out), "--size", str(SIZE), "--model", model_file,
                 "--faces-per-draw", "4", *extra)
    assert result.exit_code == 0, result.output
    return result


def make_dataset(out, model, *, n: int, seed: int, shard_size: int, size: int = SIZE, extras: tuple[str, ...] = (),
                 faces_per_draw: int = 16):
    """A dataset of ``n`` samples of ``model`` at ``size`` px in ``out``, by the library's ``generate``
    (in process; the tests' one way to make shards without the CLI). Returns ``out``."""
    from synthface import load_config
    from synthface.generate import GenerateJob, generate

    job = GenerateJob(n=n, seed=seed, shard_size=shard_size, config=load_config(overrides={"image_size": size}),
                      extras=extras, faces_per_draw=faces_per_draw)
    generate(out, job, model=model, device="cpu")
    return out


def load_arrays(out) -> dict[str, np.ndarray]:
    """Every dataset of every shard of the dataset in ``out``, concatenated in manifest order."""
    manifest = json.loads((out / "manifest.json").read_text())
    parts: dict[str, list] = {}
    for shard in manifest["shards"]:
        with h5py.File(out / shard["file"], "r") as f:
            f.visititems(lambda name, obj: parts.setdefault(name, []).append(obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
    return {k: np.concatenate(v) for k, v in parts.items()}


def header_bomb(width: int = 50000, height: int = 50000) -> bytes:
    """A valid little PNG whose header claims ``width`` × ``height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + \
        chunk(b"IEND", b"")
