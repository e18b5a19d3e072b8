"""``synthface generate``: render sampled faces into HDF5 shards (resumable, parallel)."""

from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from ..config import SamplingConfig
from ..generate import BACKENDS, EXTRAS, GenerateJob, generate
from ..model import MorphableModel
from ..shards import CODECS, DEFAULT_CODEC
from .options import DEVICES, SHARD_RANGE, model_options, sampling_options


def _explicit(count: int, seed: int, config: SamplingConfig) -> dict[str, int]:
    """What the command line itself set of the values a resumed run records (not click's defaults)."""
    ctx = click.get_current_context()
    given = {"n": count}
    if ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE:
        given["seed"] = seed
    if ctx.params.get("size") is not None:
        given["image_size"] = config.image_size
    return given


@click.command("generate")
@click.option("--n", "count", type=click.IntRange(min=1), required=True, help="Number of samples.")
@click.option("--out", type=click.Path(file_okay=True, path_type=Path), required=True,
              help="Output directory (new or empty; or an interrupted run's, with --resume).")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True)
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples per HDF5 shard.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes, each with its own GL context.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where geometry is computed (rendering always uses OpenGL).")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out with its recorded settings "
              "(--n, and --seed/--size if given, must match them).")
@click.option("--extras", type=click.Choice(EXTRAS), multiple=True, help="Also store these per-pixel maps.")
@click.option("--codec", type=click.Choice(sorted(CODECS)), default=DEFAULT_CODEC, show_default=True,
              help="Lossless compression of images/depth/masks.")
@click.option("--faces-per-draw", type=click.IntRange(min=1), default=64, show_default=True,
              help="Faces rendered per GL draw (tiles of one atlas).")
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default="local", show_default=True,
              help="Run shard tasks in local processes or on a Ray cluster.")
@click.option("--ray-address", default=None, help="Ray cluster address ('auto' on a cluster node); default: local.")
@click.option("--shard-range", type=SHARD_RANGE, default=None,
              help="Write only shards START..STOP-1 (e.g. one SLURM array task); same flags in every task.")
@click.option("--force", is_flag=True, help="Start even if the dataset looks larger than the free disk space.")
@model_options
@sampling_options
def command(count: int, out: Path, seed: int, shard_size: int, workers: int, device: str, resume: bool,
            extras: tuple[str, ...], codec: str, faces_per_draw: int, backend: str, ray_address: str | None,
            shard_range: tuple[int, int] | None, force: bool, model: MorphableModel, config: SamplingConfig) -> None:
    """Generate COUNT synthetic faces: image, depth, mask, landmarks and parameters.

    Sample i depends only on (seed, i): any --workers or --shard-size gives the same arrays.
    """
    job = GenerateJob(n=count, seed=seed, shard_size=shard_size, config=config, extras=tuple(sorted(extras)),
                      codec=codec, faces_per_draw=faces_per_draw)
    start = time.perf_counter()
    total = count if shard_range is None else None  # a range's sample count is known only after the plan
    done = 0
    with tqdm(total=total, unit="sample", dynamic_ncols=True, disable=None) as bar:

        def tick(k: int) -> None:
            nonlocal done
            done += k
            bar.update(k)

        manifest = generate(out, job, model=model, workers=workers, device=device, resume=resume,
                            shard_range=shard_range, backend=backend, ray_address=ray_address, progress=tick,
                            force=force, expect=_explicit(count, seed, config))
    seconds = time.perf_counter() - start
    if manifest is None:
        click.echo(f"wrote shards {shard_range[0]}..{shard_range[1] - 1} ({done} samples) to {out}; the "
                   "manifest is written by the job that completes the last shard "
                   f"(or run 'synthface generate --resume --out {out}')")
        return
    size = sum((out / s["file"]).stat().st_size for s in manifest["shards"])
    click.echo(f"wrote {manifest['n']} samples in {len(manifest['shards'])} shards to {out} "
               f"({done / seconds:.1f} samples/s, {size / manifest['n'] / 1024:.1f} KiB/sample)")
