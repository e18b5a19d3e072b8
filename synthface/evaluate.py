"""Evaluation: depth error as a percentage of the face's depth range, and per-parameter errors.

The depth metric (the table form of Richardson et al.'s results), per face:

* **valid pixels** — where the ground-truth mask is 1 *and* the prediction has a surface
  (predicted depth > 0; a non-finite prediction counts as no surface);
* **range** — ``max − min`` of the ground-truth depth over the ground-truth mask (mm);
* **alignment** — the prediction is moved along the optical axis by the median of ``gt − pred``
  over the valid pixels (the shift that minimises the error below). Why: an image fixes a face's
  distance only up to its size (a 5 % larger head 5 % farther away looks the same), so an
  unaligned error would score that ambiguity — tens of mm at 1 m — rather than the face's shape.
  The unaligned error is reported too (``align=False``);
* **error** — ``100 · mean(|pred − gt|) / range`` over the valid pixels (mean over pixels, not over
  faces first), in percent.

Rows: **mean face** — the training data's mean parameters (mean shape *and* mean pose): what a
predictor scores without looking at the image, the baseline; **mean face, true pose** — the mean
shape at the sample's true pose and camera, a reference for how much of the error is shape;
**CoarseNet** and **CoarseNet+FineNet** — the checkpoint's reconstruction.

Ground-truth pixels the prediction leaves uncovered are *not* in the error — no depth could be
compared there — so every error comes with its **coverage**: valid pixels / ground-truth mask
pixels. A prediction that shrinks the face shows as low coverage, not a low error. Predicted
pixels off the ground-truth mask are ignored (there is no ground truth there). A face with no
valid pixel or a zero range has an undefined (NaN) error; :func:`summarize` skips NaNs and counts
them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from .data import ShardDataset
from .errors import CheckpointError, ConfigError
from .model import MorphableModel
from .params import ANGLES
from .predict import Checkpoint, Predictor, mean_face_prediction
from .render import FaceRenderer
from .shards import open_source
from .targets import PARAM_VECTOR, ParameterNormalizer

ROWS: dict[str, str] = {"mean_face": "mean face", "mean_face_true_pose": "mean face, true pose",
                        "coarse": "CoarseNet", "fine": "CoarseNet+FineNet"}
"""Result keys of the depth-error rows, in table order, and their labels."""

DEFINITION = ("per face: 100 * mean |pred + shift - gt| / (max - min of gt depth over the gt mask), over pixels in "
              "the gt mask where the prediction has a surface, shift = median of (gt - pred) over those pixels "
              "(0 in depth_error_percent_unaligned); coverage = those pixels / gt mask pixels; statistics over "
              "faces with a defined error (std: population, p90: linear interpolation)")

_FIELDS = ("image", "depth", "mask", "identity", "expression", "pose", "intrinsics")


class DepthError(NamedTuple):
    """Per-sample depth errors of a batch (see the module docstring for the definition)."""

    percent: np.ndarray
    """(B,) float64 mean absolute depth error in % of the face's depth range; NaN where undefined."""
    coverage: np.ndarray
    """(B,) float64 fraction of ground-truth face pixels where the prediction has a surface."""


def _numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def depth_error_percent(pred_depth: Any, gt_depth: Any, mask: Any, align: bool = True) -> DepthError:
    """Depth error of predictions (B, H, W) against ground truth (B, H, W) mm with its mask (B, H, W),
    after the optical-axis alignment of the module docstring unless ``align`` is False.

    Accepts numpy or torch, (H, W) for a single face, and a (B, 1, H, W) channel axis.
    """
    pred, gt, m = (_numpy(a) for a in (pred_depth, gt_depth, mask))
    pred, gt, m = (a.reshape(-1, *a.shape[-2:]) for a in (pred, gt, m))
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    m = m.astype(bool)
    if not pred.shape == gt.shape == m.shape:
        raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, mask {m.shape}")
    with np.errstate(invalid="ignore"):
        surface = np.isfinite(pred) & (pred > 0)
    valid = m & surface
    n_mask = m.sum((1, 2))
    n_valid = valid.sum((1, 2))
    depth_range = np.where(m, gt, -np.inf).max((1, 2)) - np.where(m, gt, np.inf).min((1, 2))
    if align:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: faces with no valid pixel
            shift = np.nanmedian(np.where(valid, gt - np.where(valid, pred, 0.0), np.nan), axis=(1, 2))
        pred = pred + np.nan_to_num(shift)[:, None, None]
    abs_sum = np.where(valid, np.abs(np.where(valid, pred, 0.0) - gt), 0.0).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = 100.0 * abs_sum / n_valid / depth_range
    percent = np.where((n_valid > 0) & (n_mask > 0) & (depth_range > 0), percent, np.nan)
    coverage = np.where(n_mask > 0, n_valid / np.maximum(n_mask, 1), np.nan)
    return DepthError(percent, coverage)


def summarize(per_sample: Any) -> dict[str, float | int | None]:
    """``{mean, std, median, p90, n, n_undefined}`` of per-sample values, skipping NaNs (None if none left)."""
    x = np.asarray(per_sample, np.float64).reshape(-1)
    ok = x[np.isfinite(x)]
    stats: dict[str, float | int | None] = {"mean": None, "std": None, "median": None, "p90": None}
    if ok.size:
        stats = {"mean": float(ok.mean()), "std": float(ok.std()), "median": float(np.median(ok)),
                 "p90": float(np.percentile(ok, 90))}
    return {**stats, "n": int(ok.size), "n_undefined": int(x.size - ok.size)}


def parameter_errors(pred: np.ndarray, truth: np.ndarray, normalizer: ParameterNormalizer) -> np.ndarray:
    """Per-sample absolute error (B, N) per column of the flat vector: identity and expression in
    their own units, pose angles in degrees (wrapped to [0, 180]), translation in mm."""
    err = np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))
    angles = np.arange(normalizer.dim)[normalizer.slices["pose"]][ANGLES]
    wrapped = np.abs((err[:, angles] + np.pi) % (2 * np.pi) - np.pi)
    err[:, angles] = np.degrees(wrapped)
    return err


def _parameter_table(mae: np.ndarray, normalizer: ParameterNormalizer) -> dict[str, Any]:
    """Mean absolute errors: per column, and per block (identity, expression, rotation_deg, translation_mm)."""
    sl = normalizer.slices
    pose = np.arange(normalizer.dim)[sl["pose"]]
    blocks = {"identity": mae[sl["identity"]], "expression": mae[sl["expression"]],
              "rotation_deg": mae[pose[ANGLES]], "translation_mm": mae[np.setdiff1d(pose, pose[ANGLES])]}
    return {"blocks": {k: float(v.mean()) if v.size else None for k, v in blocks.items()},
            "columns": dict(zip(normalizer.columns(), (float(v) for v in mae), strict=True))}


def _depth_table(rows: dict[str, list[DepthError]]) -> dict[str, dict[str, Any]]:
    """Per row: :func:`summarize` of the per-face errors plus the mean coverage."""
    table = {}
    for key, parts in rows.items():
        percent = np.concatenate([p.percent for p in parts])
        coverage = np.concatenate([p.coverage for p in parts])
        covered = coverage[np.isfinite(coverage)]
        table[key] = {**summarize(percent), "coverage": float(covered.mean()) if covered.size else None}
    return table


def _dataset_model(path: Path) -> str:
    """The model sha256 a dataset directory or shard file was generated with."""
    return open_source(path).model_sha256


def evaluate(data: str | os.PathLike | Sequence[str | os.PathLike], checkpoint: Checkpoint, model: MorphableModel,
             *, split: Literal["train", "val", "all"] = "val", limit: int | None = None, device: str = "cpu",
             val_fraction: float | None = None, batch_size: int = 32, renderer: FaceRenderer | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Score a checkpoint on shards: depth-error rows (:data:`ROWS`; aligned and unaligned) and
    per-parameter mean absolute errors (the rows but CoarseNet+FineNet).

    ``split`` uses the checkpoint's ``train_config["val_fraction"]`` (else ``val_fraction``, else
    0.05), so "val" is the training run's held-out data; ``limit`` takes the split's first N
    samples. ``progress(k)`` is called after each batch of k samples.
    """
    paths = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(p) for p in data]
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if val_fraction is None:
        val_fraction = float(checkpoint.train_config.get("val_fraction", 0.05))
    ds = ShardDataset(paths, split=split, val_fraction=val_fraction, fields=_FIELDS, normalize=None)
    for p in paths:
        sha = _dataset_model(p)
        if sha and sha != checkpoint.model_sha256:
            raise CheckpointError(f"{p} was generated with model sha256 {sha[:12]}… but {checkpoint.path} was "
                                  f"trained on {checkpoint.model_name!r} ({checkpoint.model_sha256[:12]}…); "
                                  "evaluate on data of the checkpoint's model")
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ConfigError(f"the {split!r} split of {', '.join(map(str, paths))} is empty (val_fraction "
                          f"{val_fraction}); use --split all or more data")
    size = int(ds[0]["image"].shape[-1])
    if size != checkpoint.image_size:  # the networks would run, on a framing they never saw
        raise ConfigError(f"{checkpoint.path} was trained on {checkpoint.image_size} px images but "
                          f"{', '.join(map(str, paths))} holds {size} px ones; evaluate on data of its size "
                          f"(synthface generate --size {checkpoint.image_size})")
    loader = DataLoader(Subset(ds, range(n)), batch_size=batch_size, shuffle=False)
    normalizer = checkpoint.normalizer
    keys = [k for k in ROWS if k != "fine" or checkpoint.fine is not None]
    rows: dict[str, list[DepthError]] = {k: [] for k in keys}
    unaligned: dict[str, list[DepthError]] = {k: [] for k in keys}
    param_err: dict[str, list[np.ndarray]] = {k: [] for k in keys if k != "fine"}
    with Predictor(checkpoint, model, device=device, renderer=renderer) as predictor:
        for batch in loader:
            k = batch["intrinsics"].numpy()
            gt, mask = batch["depth"][:, 0].numpy(), batch["mask"][:, 0].numpy()
            truth = normalizer.flatten({name: batch[name].numpy() for name in PARAM_VECTOR})
            r = predictor.renderer(gt.shape[-1])
            mean_pose = normalizer.to_params(np.zeros((len(k), normalizer.dim)), k)["pose"]
            preds = {"mean_face": mean_face_prediction(r, mean_pose, k),
                     "mean_face_true_pose": mean_face_prediction(r, batch["pose"].numpy(), k),
                     "coarse": predictor.predict(batch["image"], k)}
            for key in keys:
                pred = preds["coarse" if key == "fine" else key]
                depth = pred.fine_depth if key == "fine" else pred.coarse_depth
                rows[key].append(depth_error_percent(depth, gt, mask))
                unaligned[key].append(depth_error_percent(depth, gt, mask, align=False))
                if key in param_err:
                    param_err[key].append(parameter_errors(normalizer.flatten(pred.params), truth, normalizer))
            if progress is not None:
                progress(len(k))
    params = {key: _parameter_table(np.concatenate(v).mean(0), normalizer) for key, v in param_err.items()}
    return {
        "n_samples": n, "split": split, "val_fraction": val_fraction, "data": [str(p) for p in paths],
        "checkpoint": {"path": str(checkpoint.path), "stage": checkpoint.stage, "step": checkpoint.step,
                       "coarse_iterations": checkpoint.coarse_iterations, "has_fine": checkpoint.fine is not None},
        "model": {"name": model.name, "sha256": model.sha256},
        "depth_error_percent": _depth_table(rows), "depth_error_percent_unaligned": _depth_table(unaligned),
        "definition": DEFINITION, "parameter_error": params,
        "units": {"identity": "model std units", "expression": "coefficient units", "rotation": "degrees",
                  "translation": "mm"},
    }


__all__ = ["DEFINITION", "ROWS", "DepthError", "depth_error_percent", "evaluate", "parameter_errors", "summarize"]
