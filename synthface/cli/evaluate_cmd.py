"""``synthface evaluate``: depth error (% of the face's depth range) and per-parameter errors of a checkpoint
on shards, or its landmark error on annotated photos (``--photos``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from ..errors import ConfigError
from ..geometry import resolve_device
from ..model import MorphableModel
from ..shards import atomic_write_text
from .options import DEVICES, detector_option, model_options


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _table(result: dict[str, Any]) -> list[str]:
    """The depth-error rows (mean, std, median, p90 in %) and the per-block parameter errors."""
    from ..evaluate import ROWS
    lines = [f"depth error, % of the face's depth range, aligned along the optical axis ({result['n_samples']} "
             f"{result['split']} samples)",
             f"  {'':<22}{'mean':>8}{'std':>8}{'median':>8}{'p90':>8}{'coverage':>10}"]
    for key, row in result["depth_error_percent"].items():
        stats = "".join(f"{_fmt(row[s]):>8}" for s in ("mean", "std", "median", "p90"))
        undefined = f"  ({row['n_undefined']} undefined)" if row["n_undefined"] else ""
        lines.append(f"  {ROWS[key]:<22}{stats}{_fmt(row['coverage'], '.1%'):>10}{undefined}")
    lines.append("parameter error (mean absolute)")
    lines.append(f"  {'':<22}{'identity':>10}{'expression':>12}{'rotation °':>12}{'transl. mm':>12}")
    for key, table in result["parameter_error"].items():
        b = table["blocks"]
        lines.append(f"  {ROWS[key]:<22}{_fmt(b['identity'], '.3f'):>10}{_fmt(b['expression'], '.3f'):>12}"
                     f"{_fmt(b['rotation_deg']):>12}{_fmt(b['translation_mm']):>12}")
    return lines


def _photo_table(result: dict[str, Any]) -> list[str]:
    """NME (inner 51, all 68) and failure rates per row of :func:`~synthface.evaluate_photos.evaluate_photos`."""
    from ..evaluate_photos import PHOTO_ROWS
    missed = result["n_photos"] - result["detected"]
    lines = [f"landmark error on {result['n_photos']} annotated photos, NME by the outer-eye-corner distance "
             f"(boxes: {result['boxes']}" + (f", {result['detector']}; it missed {missed}, cropped from their "
                                             "landmarks)" if result["boxes"] == "detector" else ")"),
             f"  {'':<20}{'NME 51':>8}{'median':>8}{'NME 68':>8}{'fail 51':>9}{'fail 68':>9}"]
    for key, row in result["rows"].items():
        lines.append(f"  {PHOTO_ROWS[key]:<20}{_fmt(row['nme_51'], '.4f'):>8}{_fmt(row['median_nme_51'], '.4f'):>8}"
                     f"{_fmt(row['nme_68'], '.4f'):>8}{_fmt(row['failure_rate_51'], '.1%'):>9}"
                     f"{_fmt(row['failure_rate_68'], '.1%'):>9}")
    lines.append(f"  (fail: NME > {result['failure_threshold']}; FineNet refines depth only: its landmarks are "
                 "CoarseNet's)")
    if result["without_pts"]:
        lines.append(f"  {len(result['without_pts'])} photos without a .pts file were left out")
    return lines


@click.command("evaluate")
@click.option("--data", "data", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Dataset directory or shard file (repeatable).")
@click.option("--photos", type=click.Path(path_type=Path), default=None,
              help="Instead of --data: a folder of photos with ibug-68 .pts files beside them (300-W).")
@click.option("--boxes", type=click.Choice(["detector", "landmarks"]), default="detector", show_default=True,
              help="--photos: crop around the detector's box (as reconstruct does) or the annotation's.")
@detector_option
@click.option("--fov", "fov_deg", type=click.FloatRange(1.0, 170.0), default=50.0, show_default=True,
              help="--photos: assumed field of view (degrees) across a photo's longer side.")
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="Checkpoint written by 'synthface train'.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True,
              help="Which samples: the training run's held-out split, its training split, or all.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate only the split's first N samples.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the networks run (rendering always uses OpenGL).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every number (incl. per-parameter errors) to this JSON file.")
@model_options
def command(data: tuple[Path, ...], photos: Path | None, boxes: str, detector: str, fov_deg: float,
            checkpoint: Path, split: str, limit: int | None, batch_size: int, device: str, json_out: Path | None,
            model: MorphableModel) -> None:
    """Score CHECKPOINT on shards: the mean face (baseline), CoarseNet and CoarseNet+FineNet.

    With --photos DIR instead: the landmark error (NME over the outer-eye-corner distance, inner 51 and
    all 68 points, failures above 0.08) of the image-blind mean face and CoarseNet on photos with
    ibug .pts annotations, each cropped as 'reconstruct' crops it.

    The depth error of a face is the mean |predicted - true depth| over its pixels, after moving the
    prediction along the optical axis by the median difference, as a percentage of its true depth
    range; the table gives its mean, std, median and 90th percentile over faces. "mean face" is the
    training data's mean shape and pose; "mean face, true pose" puts the mean shape at the true pose.
    """
    if json_out is not None and not json_out.parent.is_dir():
        raise ConfigError(f"--json {json_out}: directory {json_out.parent} does not exist; create it first")
    if bool(data) == (photos is not None):
        raise ConfigError("give either --data (shards) or --photos (annotated photos), not both or neither")
    from ..evaluate import evaluate  # these import torch: only when the command runs, never for --help
    from ..evaluate_photos import evaluate_photos
    from ..predict import load_checkpoint

    device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=device)
    with tqdm(unit="photo" if photos else "sample", dynamic_ncols=True, disable=None, leave=False) as bar:
        if photos is not None:
            result = evaluate_photos(photos, ckpt, model, boxes=boxes, detector=detector,  # type: ignore[arg-type]
                                     fov_deg=fov_deg,
                                     device=device, batch_size=batch_size, progress=bar.update)
        else:
            result = evaluate(list(data), ckpt, model, split=split, limit=limit, device=device,  # type: ignore[arg-type]
                              batch_size=batch_size, progress=bar.update)
    for line in (_photo_table(result) if photos is not None else _table(result)):
        click.echo(line)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=1, allow_nan=False) + "\n")
        click.echo(f"wrote {json_out}")
