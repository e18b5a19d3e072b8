"""Landmark accuracy on photos with ibug-68 ground truth: ``synthface evaluate --photos DIR``.

Every photo under DIR (:data:`~synthface.photos.IMAGE_SUFFIXES`, recursively) with a ``.pts`` file of the
same stem beside it (the 300-W convention, :func:`~synthface.photo.read_pts`) is cropped as
``reconstruct`` crops a photo (:func:`~synthface.photo.crop_square`, the checkpoint's framing): around
the detector's box that overlaps the annotated face (``boxes="detector"``; ``detector`` picks dlib or
Haar, :data:`~synthface.photo.DETECTORS`; a photo where the detector finds
none is cropped from its landmarks' box and counted as missed), or always around the landmarks' box
(``boxes="landmarks"``, which leaves the detector out of the score). The estimate's 68 landmarks are
projected into the photo and compared with the annotation: the normalized mean error (NME) is the mean
point distance over the outer-eye-corner distance (ibug points 37 and 46), over all 68 points and over
the inner 51 (the jaw outline left out); a photo fails when its NME exceeds :data:`FAILURE_NME`.

Rows: the image-blind mean face (the training data's mean shape and pose in the same crop) and
CoarseNet. FineNet refines depth only, so its 2D landmarks are CoarseNet's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import ConfigError, ReconstructError
from .model import MorphableModel
from .photo import DEFAULT_FOV_DEG, PhotoCrop, crop_square, detect_faces, read_image, read_pts, resolve_detector
from .photos import IMAGE_SUFFIXES
from .predict import Checkpoint, Predictor, mean_face_prediction

FAILURE_NME = 0.08
"""A photo whose NME exceeds this counts as a failure (the usual 300-W threshold)."""
OUTER_EYE_CORNERS = (36, 45)
"""0-based ibug indices of the outer eye corners: the NME's normalizing distance."""
INNER = slice(17, 68)
"""The inner 51 points: brows, nose, eyes, mouth (the jaw outline's 17 left out)."""
PHOTO_ROWS = {"mean_face": "mean face (blind)", "coarse": "CoarseNet"}
BOXES = ("detector", "landmarks")


def annotated_photos(folder: str | os.PathLike) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(photo, .pts) pairs under ``folder`` sorted by path, and the photos without a ``.pts``."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--photos {root}: not a directory; pass a folder of photos with ibug .pts files")
    pairs, bare = [], []
    for p in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        pts = p.with_suffix(".pts")
        (pairs.append((p, pts)) if pts.is_file() else bare.append(p))
    if not pairs:
        raise ConfigError(f"--photos {root}: no photo ({', '.join(IMAGE_SUFFIXES)}) has a .pts file beside it; "
                          "add 68-point ibug annotations named like the photos")
    return pairs, bare


def nme(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) NME over all 68 points and (B,) over the inner 51, of (B, 68, 2) estimates against the truth."""
    eyes = np.linalg.norm(truth[:, OUTER_EYE_CORNERS[0]] - truth[:, OUTER_EYE_CORNERS[1]], axis=-1)
    dist = np.linalg.norm(np.asarray(pred, np.float64) - truth, axis=-1)
    return dist.mean(1) / eyes, dist[:, INNER].mean(1) / eyes


def on_face(box: tuple[int, ...], truth: np.ndarray) -> bool:
    """Whether a detector box's centre lies inside the annotated landmarks' box (the same face)."""
    x, y, w, h = box
    lo, hi = truth.min(0), truth.max(0)
    return bool(lo[0] <= x + w / 2 <= hi[0] and lo[1] <= y + h / 2 <= hi[1])


def _crop(image: np.ndarray, truth: np.ndarray, size: int, fraction: float, fov_deg: float,
          boxes: str, detector: str) -> tuple[PhotoCrop, bool]:
    """The crop of the annotated face and whether ``detector`` (a resolved name) found it."""
    if boxes == "detector":  # every face, not only the largest: the annotated one may be smaller
        found = [f for f in detect_faces(image, detector) if on_face(f, truth)]
        if found:
            return crop_square(image, found[0], size, fraction, fov_deg, detector), True
    lo, hi = truth.min(0), truth.max(0)
    return crop_square(image, (*lo, *(hi - lo)), size, fraction, fov_deg, "landmarks"), False


def evaluate_photos(folder: str | os.PathLike, checkpoint: Checkpoint, model: MorphableModel, *,
                    boxes: Literal["detector", "landmarks"] = "detector", detector: str = "auto",
                    fov_deg: float = DEFAULT_FOV_DEG, device: str = "cpu", batch_size: int = 16,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Score a checkpoint's landmarks on annotated photos (module docstring); every number as a dict."""
    if boxes not in BOXES:
        raise ConfigError(f"boxes must be one of {', '.join(BOXES)}, got {boxes!r}")
    detector = resolve_detector(detector)
    pairs, bare = annotated_photos(folder)
    truths = [read_pts(pts) for _, pts in pairs]  # every annotation checked before any work
    size, fraction = checkpoint.image_size, checkpoint.face_fraction
    per_photo: list[dict[str, Any]] = []
    estimates: dict[str, list[np.ndarray]] = {k: [] for k in PHOTO_ROWS}
    lm = np.asarray(model.landmark_indices)
    with Predictor(checkpoint, model, device=device) as predictor:
        for start in range(0, len(pairs), batch_size):
            crops, found = [], []
            for (photo, _), truth in zip(pairs[start:start + batch_size], truths[start:start + batch_size],
                                         strict=True):
                try:
                    crop, hit = _crop(read_image(photo), truth, size, fraction, fov_deg, boxes, detector)
                except ReconstructError as exc:
                    message = str(exc)
                    raise ReconstructError(message if message.startswith(str(photo)) else f"{photo}: {message}") \
                        from exc
                crops.append(crop)
                found.append(hit)
            images = np.stack([c.image for c in crops]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
            k = np.stack([c.intrinsics for c in crops])
            mean_pose = checkpoint.normalizer.to_params(np.zeros((len(k), checkpoint.normalizer.dim)), k)["pose"]
            preds = {"mean_face": mean_face_prediction(predictor.renderer(size), mean_pose, k),
                     "coarse": predictor.predict(images, k)}
            for key, pred in preds.items():
                estimates[key].extend(c.to_photo(v[lm]) for c, v in zip(crops, pred.vertices, strict=True))
            per_photo.extend({"photo": str(photo), "detected": hit}
                             for (photo, _), hit in zip(pairs[start:start + batch_size], found, strict=True))
            if progress is not None:
                progress(len(crops))
    truth = np.stack(truths)
    rows: dict[str, Any] = {}
    for key, est in estimates.items():
        all68, inner51 = nme(np.stack(est), truth)
        rows[key] = {"nme_68": float(all68.mean()), "nme_51": float(inner51.mean()),
                     "median_nme_51": float(np.median(inner51)),
                     "failure_rate_68": float((all68 > FAILURE_NME).mean()),
                     "failure_rate_51": float((inner51 > FAILURE_NME).mean())}
        for record, a, b in zip(per_photo, all68, inner51, strict=True):
            record[key] = {"nme_68": float(a), "nme_51": float(b)}
    return {
        "n_photos": len(pairs), "folder": str(folder), "without_pts": [str(p) for p in bare],
        "boxes": boxes, "detector": detector if boxes == "detector" else None,
        "detected": int(sum(r["detected"] for r in per_photo)),
        "checkpoint": {"path": str(checkpoint.path), "stage": checkpoint.stage, "step": checkpoint.step,
                       "face_fraction": fraction},
        "fov_deg": fov_deg, "failure_threshold": FAILURE_NME, "rows": rows, "photos": per_photo,
        "definition": "NME: mean distance of the estimate's landmarks (projected into the photo) from the ibug-68 "
                      "annotation over the outer-eye-corner distance (points 37 and 46); nme_51 leaves out the jaw "
                      "outline (points 1-17); a failure is an NME above failure_threshold",
    }


__all__ = ["BOXES", "FAILURE_NME", "PHOTO_ROWS", "annotated_photos", "evaluate_photos", "nme", "on_face"]
