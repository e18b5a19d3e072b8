"""Random-access read speed of shards: raw h5py single samples, and ShardDataset through a DataLoader.

    python benchmarks/bench_read.py                 # generates 2,000 samples at 200x200 in a temp dir
    python benchmarks/bench_read.py --data shards/  # an existing dataset

Shows that one sample is one chunk (bytes read per random sample ≈ its stored chunks, not a
shard), then samples/s through ``ShardDataset`` + ``DataLoader(batch_size=32, shuffle=True)``
for several worker counts. Figures are with a warm page cache (the data was just written or
read); a cold disk adds its own latency per chunk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filters)
import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(__file__))
import common

from synthface.data import ShardDataset
from synthface.shards import read_manifest

PER_SAMPLE = ("image", "depth", "mask")


def rchar() -> int:
    """Bytes this process has read through read()/pread() so far (page cache included)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def chunk_bytes(f: h5py.File, row: int) -> int:
    """Stored (compressed) bytes of sample ``row``'s chunks in the per-sample datasets."""
    return sum(f[name].id.get_chunk_info_by_coord((row,) + (0,) * (f[name].ndim - 1)).size for name in PER_SAMPLE)


def raw_reads(data: Path, n_reads: int, rng: np.random.Generator) -> None:
    """Random single samples with plain h5py vs whole shards: time and bytes read per sample."""
    manifest = read_manifest(data)
    files = [h5py.File(data / s["file"], "r", rdcc_nbytes=0) for s in manifest["shards"]]
    try:
        f0 = files[0]
        print("\n## layout")
        for name in PER_SAMPLE:
            d = f0[name]
            print(f"{name:<6} shape {d.shape}  chunks {d.chunks}  filters {list(d._filters)}")
        counts = [int(f.attrs["count"]) for f in files]
        raw_per_sample = sum(f0[name][0].nbytes for name in PER_SAMPLE)
        picks = [(k, int(rng.integers(counts[k]))) for k in rng.integers(len(files), size=n_reads)]
        stored = np.mean([chunk_bytes(files[k], row) for k, row in picks])
        t0 = time.perf_counter()
        dsets = [{name: f[name] for name in PER_SAMPLE} for f in files]  # as ShardDataset keeps them
        t_lookup = (time.perf_counter() - t0) / (len(files) * len(PER_SAMPLE))
        for k, row in picks[:5]:  # warm metadata (chunk index) so the loop measures sample reads
            for name in PER_SAMPLE:
                dsets[k][name][row]
        b0, t0 = rchar(), time.perf_counter()
        for k, row in picks:
            for name in PER_SAMPLE:
                dsets[k][name][row]
        t_one = (time.perf_counter() - t0) / n_reads
        b_one = (rchar() - b0) / n_reads
        # Whole shards: every sample of every shard, one read per dataset.
        b0, t0 = rchar(), time.perf_counter()
        for f in files:
            for name in PER_SAMPLE:
                f[name][()]
        total = sum(counts)
        t_all, b_all = (time.perf_counter() - t0) / total, (rchar() - b0) / total
        shard_bytes = np.mean([os.path.getsize(f.filename) for f in files])
        print(f"\n## raw h5py ({len(files)} shards, {total} samples; image+depth+mask, "
              f"{raw_per_sample / 1024:.1f} KiB decompressed per sample)")
        print(f"{'access':<34}{'µs/sample':>10}{'samples/s':>11}{'KiB read/sample':>17}")
        print(f"{'random single sample':<34}{t_one * 1e6:>10.0f}{1 / t_one:>11.0f}{b_one / 1024:>17.1f}")
        print(f"{'whole shards (sequential)':<34}{t_all * 1e6:>10.0f}{1 / t_all:>11.0f}{b_all / 1024:>17.1f}")
        print(f"(opening a dataset object, f[name], costs {t_lookup * 1e6:.0f} µs: ShardDataset does it once per "
              "file and process, not per read)")
        print(f"stored chunks of one sample: {stored / 1024:.1f} KiB; one shard file: {shard_bytes / 2**20:.1f} MiB "
              f"-> a random read fetches {b_one / stored:.2f}x its own chunks, "
              f"{b_one / shard_bytes * 100:.3f}% of a shard")
    finally:
        for f in files:
            f.close()


def loader_reads(data: Path, workers: list[int], batches: int, repeat: int) -> None:
    t0 = time.perf_counter()
    ds = ShardDataset(data, split="all")
    t_init = time.perf_counter() - t0
    print(f"\n## ShardDataset + DataLoader(batch_size=32, shuffle=True): {len(ds)} samples, fields {ds.fields}; "
          f"constructor (manifest, attrs of every shard, normalizer fit) {t_init * 1e3:.0f} ms; "
          f"torch threads in this process (collate when workers=0) {torch.get_num_threads()}; "
          f"best and median of {repeat} runs")
    print(f"{'workers':>7}{'first batch s':>15}{'best samples/s':>16}{'median':>8}{'ms/batch':>10}{'batches':>9}")
    # Warm-up: this process's first large allocations fault fresh pages in (slow in some VMs), which would
    # otherwise be charged to whichever worker count is timed first.
    for _, _batch in zip(range(10), DataLoader(ds, batch_size=32, shuffle=True), strict=False):
        pass
    for w in workers:
        rates, firsts = [], []
        for r in range(repeat):
            loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=w,
                                generator=torch.Generator().manual_seed(r))
            t0 = time.perf_counter()
            it = iter(loader)
            next(it)  # worker start-up and the first batch
            firsts.append(time.perf_counter() - t0)
            n, t1 = 0, time.perf_counter()
            for _, batch in zip(range(batches), it, strict=False):
                n += len(batch["index"])
            rates.append(n / (time.perf_counter() - t1))
            del it
        best = max(rates)
        print(f"{w:>7}{np.median(firsts):>15.2f}{best:>16.0f}{np.median(rates):>8.0f}{32e3 / best:>10.1f}"
              f"{n // 32:>9}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an existing dataset directory (default: generate one)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--workers", default="0,2,8", help="comma-separated DataLoader worker counts")
    ap.add_argument("--reads", type=int, default=2000, help="random raw h5py reads")
    ap.add_argument("--batches", type=int, default=60, help="batches timed per run (after the first)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per worker count (the machine may be shared)")
    args = ap.parse_args()
    common.print_machine()
    print(f"# load avg   {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other processes compete for the cores)")
    with tempfile.TemporaryDirectory(prefix="bench_read_") as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "shards"
            common.make_data(data, args.n, args.size, args.shard_size)
        raw_reads(data, args.reads, np.random.default_rng(0))
        loader_reads(data, [int(w) for w in args.workers.split(",")], args.batches, args.repeat)
    print(f"\n# peak RSS {common.peak_rss_mib():.0f} MiB (this process or its largest finished child)")


if __name__ == "__main__":
    main()
