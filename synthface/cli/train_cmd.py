"""``synthface train``: CoarseNet → rendering layer → FineNet on shards (resumable; torchrun for DDP)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import click
from tqdm import tqdm

from ..config import parse_assignment
from ..model import MorphableModel
from ..train_config import LR_SCHEDULES, OPTIMIZERS, STAGES, TrainConfig
from .options import DEVICES, model_options

_DEFAULTS = TrainConfig()
_SHOWN = ("loss", "vertex_mm_t{}", "depth_mm")  # metrics on the progress bar


@click.command("train")
@click.option("--data", "data", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Dataset directory (or shard file) from 'synthface generate' (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run directory (new or empty; or this run's, with --resume).")
@click.option("--stage", type=click.Choice(STAGES), default=_DEFAULTS.stage, show_default=True,
              help="coarse, fine (needs --coarse-checkpoint) or all (coarse then fine).")
@click.option("--steps", type=click.IntRange(min=1), default=_DEFAULTS.steps, show_default=True,
              help="Optimizer steps per stage.")
@click.option("--batch-size", type=click.IntRange(min=1), default=_DEFAULTS.batch_size, show_default=True,
              help="Global batch (split across torchrun processes).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=_DEFAULTS.lr, show_default=True,
              help="Adam learning rate.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=_DEFAULTS.lr_schedule, show_default=True,
              help="constant, or cosine decay to lr/100 over each stage's steps.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_DEFAULTS.optimizer, show_default=True,
              help="adam, or sgd with momentum 0.9.")
@click.option("--coarse-iterations", type=click.IntRange(min=1), default=_DEFAULTS.coarse_iterations,
              show_default=True, help="CoarseNet refinements per image (T).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the nets run (under torchrun: cuda:LOCAL_RANK).")
@click.option("--num-workers", type=click.IntRange(min=0), default=_DEFAULTS.num_workers, show_default=True,
              help="DataLoader worker processes per training process.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=_DEFAULTS.checkpoint_every,
              show_default=True, help="Steps between checkpoints (one is always written at a stage's end).")
@click.option("--val-every", type=click.IntRange(min=0), default=_DEFAULTS.val_every, show_default=True,
              help="Steps between validations (0: only at a stage's end).")
@click.option("--faces-per-draw", type=click.IntRange(min=1), default=_DEFAULTS.faces_per_draw, show_default=True,
              help="Faces rendered per GL draw (feedback and coarse depth).")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Weight initialisation and data order.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly from checkpoints/latest.pt.")
@click.option("--coarse-checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CoarseNet for --stage fine: a checkpoint of a coarse or all run.")
@click.option("--real-images", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of unlabelled face photos (searched recursively) that the fine stage also trains on.")
@click.option("--real-fraction", type=click.FloatRange(0, 1, min_open=True), default=_DEFAULTS.real_fraction,
              show_default=True, help="Share of each fine batch taken from --real-images.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any training setting, e.g. --set coarse_norm=batch --set shape_weight=0.2 "
                   "(repeatable; the names are TrainConfig's fields).")
@model_options
def command(data: tuple[Path, ...], out: Path, stage: str, steps: int, batch_size: int, lr: float, lr_schedule: str,
            optimizer: str,
            coarse_iterations: int, device: str, num_workers: int, checkpoint_every: int, val_every: int,
            faces_per_draw: int, seed: int, resume: bool, coarse_checkpoint: Path | None,
            real_images: Path | None, real_fraction: float, assignments: tuple[str, ...],
            model: MorphableModel) -> None:
    """Train the coarse-to-fine face reconstruction networks on synthetic shards.

    Multi-GPU / multi-node: torchrun --nproc_per_node N -m synthface train ... (rank 0 writes).
    """
    config = TrainConfig(stage=stage, steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule,
                         optimizer=optimizer,
                         coarse_iterations=coarse_iterations,
                         device=device, num_workers=num_workers, checkpoint_every=checkpoint_every,
                         val_every=val_every, faces_per_draw=faces_per_draw, seed=seed,
                         real_images=str(real_images) if real_images else "", real_fraction=real_fraction,
                         ).with_overrides(dict(parse_assignment(a) for a in assignments))
    from ..train import train  # imports torch: only when the command runs, never for --help

    main = int(os.environ.get("RANK", "0")) == 0
    bars: dict[str, tqdm] = {}

    def progress(stage_name: str, step: int, total: int, metrics: Mapping[str, float]) -> None:
        bar = bars.get(stage_name)
        if bar is None:
            for old in bars.values():
                old.close()
            bar = bars[stage_name] = tqdm(total=total, initial=step - 1, desc=stage_name, unit="step",
                                          dynamic_ncols=True, disable=None)
        shown = {k: metrics[k] for k in (s.format(coarse_iterations) for s in _SHOWN) if k in metrics}
        bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        bar.update(step - bar.n)

    try:
        summary = train(list(data), out, config, model=model, resume=resume, coarse_checkpoint=coarse_checkpoint,
                        progress=progress if main else None)
    finally:
        for bar in bars.values():
            bar.close()
    if not main:
        return
    parts = []
    for name, result in summary["stages"].items():
        val = result.get("val") or {}
        key = "vertex_mm" if name == "coarse" else "depth_mm"
        metric = f", val {key} {val[key]:.3g}" if key in val else ""
        if not result["train"]:
            parts.append(f"{name}: nothing to do, already at step {result['steps']}")
            continue
        parts.append(f"{name} {result['steps']} steps (loss {result['train']['loss']:.4g}{metric})")
    where = summary.get("checkpoint", out / "checkpoints" / "latest.pt")
    resumed = f" (resumed at step {summary['resumed_from']})" if summary.get("resumed_from") else ""
    if "real_images" in summary:
        photos = summary["real_images"]
        skipped = f", {photos['skipped']} without a detectable face left out" if photos["skipped"] else ""
        parts.append(f"{photos['photos']} photo{'s' if photos['photos'] != 1 else ''}{skipped}")
    world = summary["world_size"]
    same = f" (all {world} hold the same weights)" if world > 1 else ""
    click.echo(f"trained {'; '.join(parts)}{resumed} in {summary['seconds']:.1f} s "
               f"on {world} process(es){same}; checkpoint {where}")
