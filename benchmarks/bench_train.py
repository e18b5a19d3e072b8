"""Training throughput, and whether data loading keeps up: samples/s of each stage vs its loader alone.

    python benchmarks/bench_train.py                          # generates 4,000 samples at 64x64 in a temp dir
    python benchmarks/bench_train.py --data shards/ --device cuda --batch-size 64 --num-workers 8

For each stage (coarse, fine) it runs ``synthface.train`` for ``--steps`` steps and times the steps
after the first ``--warmup`` (the progress callback stamps every step), then iterates the *same*
DataLoader the stage uses (same dataset fields, batch size, worker count, data order) without
training. Loader samples/s ÷ training samples/s is the headroom: above 1 the loader is not the
bottleneck. The coarse stage's time includes its GL feedback renders (``--coarse-iterations`` per
step), the fine stage's the coarse estimate, the coarse depth render and the SfS loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common

from synthface import load_model
from synthface.batches import StepBatches, loader
from synthface.data import ShardDataset
from synthface.stages import COARSE_FIELDS, FINE_FIELDS
from synthface.train import TrainConfig, train


def loader_rate(data: Path, config: TrainConfig, stage: str, steps: int, warmup: int) -> float:
    """Samples/s of the stage's DataLoader alone, over the steps after ``warmup``."""
    fields = COARSE_FIELDS if stage == "coarse" else FINE_FIELDS
    ds = ShardDataset(data, "train", config.val_fraction, fields, "fit" if stage == "coarse" else None)
    sampler = StepBatches(len(ds), config.batch_size, config.seed, stage, 0, steps)
    n, t0 = 0, 0.0
    for k, batch in enumerate(loader(ds, sampler, config.num_workers, config.device.startswith("cuda"))):
        if k == warmup:
            t0 = time.perf_counter()
        elif k > warmup:
            n += len(batch["index"])
    ds.close()
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="an existing dataset directory (default: generate one)")
    ap.add_argument("--n", type=int, default=4000, help="samples to generate without --data")
    ap.add_argument("--size", type=int, default=64, help="image size to generate without --data")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--coarse-iterations", type=int, default=2)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    common.print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            common.make_data(data, args.n, args.size)
        model = load_model()
        config = TrainConfig(stage="all", steps=args.steps, batch_size=args.batch_size, lr=1e-3,
                             coarse_iterations=args.coarse_iterations, num_workers=args.num_workers,
                             device=args.device, val_every=0, val_batches=0, checkpoint_every=args.steps,
                             coarse_norm="batch")
        stamps: dict[str, list[float]] = {"coarse": [], "fine": []}
        t0 = time.perf_counter()
        summary = train(data, Path(tmp) / "run", config, model=model,
                        progress=lambda stage, *_: stamps[stage].append(time.perf_counter()))
        print(f"\n## synthface train --stage all, {args.steps} steps per stage of {args.batch_size} "
              f"({summary['seconds']:.0f} s in all, {time.perf_counter() - t0:.0f} s with set-up), "
              f"num_workers {args.num_workers}, device {args.device}, coarse iterations {args.coarse_iterations}")
        print(f"{'stage':<8}{'train samples/s':>16}{'ms/step':>9}{'loader samples/s':>18}{'headroom':>10}")
        for stage in ("coarse", "fine"):
            t = np.asarray(stamps[stage])
            steps = len(t) - 1 - args.warmup
            rate = steps * args.batch_size / (t[-1] - t[args.warmup])
            loading = loader_rate(data, config, stage, args.steps, args.warmup)
            print(f"{stage:<8}{rate:>16.1f}{1e3 * args.batch_size / rate:>9.0f}{loading:>18.0f}"
                  f"{loading / rate:>9.1f}x")
        print(f"peak RSS {common.peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
