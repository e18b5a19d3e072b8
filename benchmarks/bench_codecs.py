"""Lossless shard codecs compared on real renders: bytes/sample, write speed, random single-sample reads.

    python benchmarks/bench_codecs.py                   # 256 samples of the bundled model at 200x200
    python benchmarks/bench_codecs.py --n 512 --size 256

Renders one realistic batch (``sample_params`` + ``FaceRenderer``), then writes it once per codec in
``synthface.shards.CODECS`` through ``ShardWriter`` (one-sample chunks, commit = close + fsync +
sha256 + rename, as ``generate`` does) and reads single samples (image, depth, mask) at random
indices with plain h5py. Reads are from the page cache (the file was just written): they measure
decompression, not the disk. Prints the table, which import a reader needs, and a recommendation.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common

import synthface
from synthface.render import FaceRenderer, RenderOutput, RenderSettings
from synthface.shards import CODECS, DEFAULT_CODEC, ShardWriter

PER_SAMPLE = ("image", "depth", "mask")
BUDGET_BYTES = 150_000  # per sample at 200x200 (issue 13's size target)
H5PY_BUILTIN = {"gzip", "lzf", "szip"}
CANDIDATES = {  # not in synthface.shards.CODECS: measured with --candidates to inform the choice of default
    "blosc-lz4-bitshuffle": lambda: hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE),
    "blosc-zstd1-bitshuffle": lambda: hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.BITSHUFFLE),
}


def reader_import(codec: str) -> str:
    """What a reader must import before h5py can decompress this codec."""
    opts = dict(CODECS[codec]())
    comp = opts.get("compression")
    if comp is None or comp in H5PY_BUILTIN:
        return "h5py only"
    names = {fid: name for name, fid in hdf5plugin.FILTERS.items()}
    return f"import hdf5plugin ({names.get(comp, comp)} filter)"


def render_batch(n: int, size: int, seed: int) -> tuple[synthface.MorphableModel, dict[str, np.ndarray],
                                                      RenderOutput]:
    """``n`` samples of the bundled model, rendered as ``generate`` would."""
    model = synthface.load_model()
    params = synthface.sample_params(model, seed=seed, indices=range(n),
                                     config=synthface.SamplingConfig(image_size=size))
    with FaceRenderer(model, RenderSettings(image_size=size)) as renderer:
        return model, params, renderer.render(params)


def measure(codec: str, model: synthface.MorphableModel, params: dict[str, np.ndarray], rendered: RenderOutput,
            size: int, path: Path, reads: int, batch: int = 64) -> dict[str, float]:
    """Write the batch with ``codec`` and read ``reads`` random samples back; sizes in bytes, times in s."""
    n = len(params["index"])
    start = time.perf_counter()
    with ShardWriter(path, model=model, image_size=size, first_index=0, count=n, attrs={}, codec=codec) as w:
        for s in range(0, n, batch):
            part = {k: v[s:s + batch] for k, v in params.items()}
            fields = {f: None if getattr(rendered, f) is None else getattr(rendered, f)[s:s + batch]
                      for f in RenderOutput.__dataclass_fields__}
            w.write(part, RenderOutput(**fields))
    write_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    with h5py.File(path, "r") as f:
        stored = {k: f[k].id.get_storage_size() for k in PER_SAMPLE}
        datasets = [f[k] for k in PER_SAMPLE]
        order = rng.integers(0, n, reads)
        start = time.perf_counter()
        for i in order:
            for ds in datasets:
                ds[i]
        read_s = time.perf_counter() - start
    raw = sum(getattr(rendered, k).nbytes for k in PER_SAMPLE)
    return {"file": path.stat().st_size / n, "pixels": sum(stored.values()) / n, "raw": raw / n,
            "image": stored["image"] / n, "depth": stored["depth"] / n, "mask": stored["mask"] / n,
            "write_sps": n / write_s, "write_mbs": raw / write_s / 1e6, "read_sps": reads / read_s}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="samples rendered and written per codec (default 256)")
    ap.add_argument("--size", type=int, default=200, help="image width = height (default 200)")
    ap.add_argument("--reads", type=int, default=1000, help="random single-sample reads per codec (default 1000)")
    ap.add_argument("--repeats", type=int, default=3, help="write/read each codec this often, keep the best")
    ap.add_argument("--candidates", action="store_true",
                    help=f"also measure codecs synthface does not offer ({', '.join(CANDIDATES)})")
    ap.add_argument("--out-dir", type=Path, default=None, help="where to write (default: a temporary dir)")
    args = ap.parse_args(argv)

    common.print_machine()
    codecs = list(CODECS)
    if args.candidates:  # registered in this process only, so ShardWriter accepts them
        CODECS.update(CANDIDATES)
        codecs += list(CANDIDATES)
    t0 = time.perf_counter()
    model, params, rendered = render_batch(args.n, args.size, seed=0)
    print(f"# data         {args.n} samples of {model.name} at {args.size}x{args.size}, rendered in "
          f"{time.perf_counter() - t0:.1f} s; pixel datasets image+depth+mask, one sample per chunk")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_codecs-") as tmp:
        root = args.out_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for codec in codecs:
            runs = [measure(codec, model, params, rendered, args.size, root / f"{codec}-{r}.h5", args.reads)
                    for r in range(args.repeats)]
            best = dict(runs[0])
            for key in ("write_sps", "write_mbs", "read_sps"):
                best[key] = max(r[key] for r in runs)
            results[codec] = best
            for r in range(args.repeats):
                (root / f"{codec}-{r}.h5").unlink()

    raw = next(iter(results.values()))["raw"]
    print(f"\nuncompressed image+depth+mask: {raw:,.0f} bytes/sample; reads and writes best of {args.repeats}")
    w = max(len(c) for c in results) + 1
    head = (f"{'codec':<{w}} {'file B/smp':>10} {'image':>7} {'depth':>7} {'mask':>6} {'ratio':>6} "
            f"{'write smp/s':>11} {'write MB/s':>10} {'read smp/s':>10} {'cost':>6}  reader needs")
    print(head)
    # cost: time per sample (write + one random read, ms) × size (KB); lower is better.
    cost = {c: (1000 / r["write_sps"] + 1000 / r["read_sps"]) * r["file"] / 1000 for c, r in results.items()}
    for codec, r in results.items():
        marker = "*" if codec == DEFAULT_CODEC else "+" if codec in CANDIDATES else " "
        print(f"{codec + marker:<{w}} {r['file']:>10,.0f} {r['image']:>7,.0f} {r['depth']:>7,.0f} {r['mask']:>6,.0f} "
              f"{raw / r['pixels']:>5.2f}x {r['write_sps']:>11,.0f} {r['write_mbs']:>10,.0f} "
              f"{r['read_sps']:>10,.0f} {cost[codec]:>6.1f}  {reader_import(codec)}")
    print("(* synthface's default; + candidate, not in synthface.shards.CODECS; ratio = raw / stored pixel bytes; "
          "cost = (write ms + read ms) per sample × KB per sample, lower is better)")
    offered = {c: r for c, r in results.items() if c not in CANDIDATES}
    fits = [c for c, r in offered.items() if r["file"] <= BUDGET_BYTES * (args.size / 200) ** 2]
    pick = min(fits or offered, key=cost.__getitem__)
    smallest = min(offered, key=lambda c: results[c]["file"])
    print(f"\nrecommendation by speed × size: {pick} ({results[pick]['file']:,.0f} B/sample, "
          f"{results[pick]['write_sps']:,.0f} samples/s written, {results[pick]['read_sps']:,.0f} random reads/s); "
          f"smallest: {smallest} ({results[smallest]['file']:,.0f} B/sample). "
          f"Readers of {pick}: {reader_import(pick)}.")
    better = [c for c in results if c in CANDIDATES and cost[c] < cost[pick]]
    if better:
        c = min(better, key=cost.__getitem__)
        print(f"candidate {c} would beat it: {results[c]['file']:,.0f} B/sample, {results[c]['write_sps']:,.0f} "
              f"samples/s written, {results[c]['read_sps']:,.0f} reads/s (cost {cost[c]:.1f} vs {cost[pick]:.1f})")


if __name__ == "__main__":
    main()
