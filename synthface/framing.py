"""Framing: where the face sits in a square image — one convention for the generator and the photo crop.

The *face frame* of a model is the box of its mean face (the face region: a full head is framed by its
face, as photos are). Its centre (model space, mm) is what the generator's camera aims at; its *extent*
(the larger of its width and height, mm) spans ``fraction`` of the image side at the distance of that
centre. The generator draws the fraction from ``camera.face_fraction`` (:func:`focal_length` turns it
into the focal length) and shifts the centre by up to ``camera.center_jitter`` of the side. In an image a
frame is a centre and an extent in pixels (:func:`image_frame`).

A photo has no frame, only a face detector's box. Where a detector puts its box on a face is a property
of the detector: :class:`DetectorFrame` holds the frame's centre offset from the box centre and the
frame's extent, in units of the box side, measured on renders whose frames are known
(``benchmarks/bench_framing.py``). :func:`crop_window` turns a box into the square in which the estimated
frame sits at the centre and spans ``fraction`` — the middle of the training data's range — so a photo
reaches the networks framed as the generator framed their training images, and a render pushed through
the photo path comes back to its own framing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CameraConfig
from .errors import ConfigError
from .geometry import project, transform
from .model import MorphableModel


@dataclass(frozen=True)
class FaceFrame:
    """A model's face frame (model space, mm)."""

    centre: np.ndarray
    """(3,) float64 centre of the mean face's bounding box, mm: what the camera aims at."""
    extent: float
    """Larger of the mean face's width and height, mm: what a face fraction measures."""


def face_frame(model: MorphableModel) -> FaceFrame:
    """The face frame of ``model``: the box of its mean shape's face region."""
    face = model.mean_shape[model.face_region]
    lo, hi = face.min(axis=0), face.max(axis=0)
    return FaceFrame(centre=((lo + hi) / 2).astype(np.float64), extent=float(max(hi[0] - lo[0], hi[1] - lo[1])))


def focal_length(fraction: np.ndarray, image_size: int, distance: np.ndarray, extent: float) -> np.ndarray:
    """(B,) focal length (pixels) at which ``extent`` mm at ``distance`` (B,) mm spans ``fraction`` (B,) of the side."""
    return np.asarray(fraction) * image_size * np.asarray(distance) / extent


def image_frame(frame: FaceFrame, pose: np.ndarray, intrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the frame lands in images: (B, 2) centre in pixels and (B,) extent in pixels.

    ``pose`` (B, 6) and ``intrinsics`` (B, 3, 3) as in a shard; the extent is the frame's at its centre's
    depth (a turned face looks narrower, but its frame does not change: the camera framed it so).
    """
    centre = transform(np.broadcast_to(frame.centre, (len(pose), 1, 3)).astype(np.float64),
                       np.asarray(pose, np.float64))
    xy = project(centre, np.asarray(intrinsics, np.float64))[:, 0]
    return xy, np.asarray(intrinsics)[:, 0, 0] * frame.extent / centre[:, 0, 2]


def fraction_midpoint(face_fraction: Sequence[float]) -> float:
    """The fraction a crop frames a face at: the middle of a generator's ``face_fraction`` range."""
    lo, hi = (float(v) for v in face_fraction)
    return (lo + hi) / 2.0


DEFAULT_FRACTION = fraction_midpoint(CameraConfig().face_fraction)
"""The middle of the default ``camera.face_fraction``: crops for networks whose training data is not
recorded (checkpoints written before the framing was)."""


@dataclass(frozen=True)
class DetectorFrame:
    """How a face detector's box (x, y, w, h) sits on the face frame, in units of the box side ``s = max(w, h)``:
    frame centre = box centre + ``(dx, dy)·s``, frame extent = ``scale·s``."""

    dx: float
    dy: float
    scale: float

    def frame(self, box: Sequence[float]) -> tuple[np.ndarray, float]:
        """The estimated frame of a box: (2,) centre and extent, in the photo's pixels."""
        x, y, w, h = (float(v) for v in box)
        side = max(w, h)
        return np.array([x + w / 2 + self.dx * side, y + h / 2 + self.dy * side]), self.scale * side


DETECTOR_FRAMES: Mapping[str, DetectorFrame] = {
    # OpenCV's Haar frontal-face cascade, medians over 300 renders at 256 px of the bundled model
    # (|yaw| <= 25°, |pitch| <= 15°; benchmarks/bench_framing.py).
    "haar": DetectorFrame(dx=0.004, dy=0.029, scale=1.229),
    # dlib's HOG frontal-face detector (synthface[detect]), the same renders: a tighter box (brows to chin).
    "dlib": DetectorFrame(dx=0.008, dy=-0.024, scale=1.429),
    # The box of a face's 68 ibug landmarks (ground truth in evaluation), same renders: the landmarks
    # stop at the brows, so the frame reaches up past them to the hairline.
    "landmarks": DetectorFrame(dx=0.001, dy=-0.112, scale=1.476),
    # A box the user gives (--box) or a ground-truth box: taken as the frame itself.
    "frame": DetectorFrame(dx=0.0, dy=0.0, scale=1.0),
}


def crop_window(box: Sequence[float], fraction: float, detector: str = "haar") -> tuple[float, float, float]:
    """The square crop (x0, y0, side) in photo pixels whose centre is the face frame ``detector``'s box
    suggests and in which that frame spans ``fraction`` of the side."""
    if detector not in DETECTOR_FRAMES:
        raise ConfigError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTOR_FRAMES)}")
    if not 0.05 <= fraction <= 2.0:
        raise ConfigError(f"face fraction {fraction} is outside [0.05, 2]; choose the training data's")
    centre, extent = DETECTOR_FRAMES[detector].frame(box)
    side = extent / fraction
    return float(centre[0] - side / 2), float(centre[1] - side / 2), float(side)


def training_fraction(records: Sequence[Any]) -> float:
    """The crop fraction for networks trained on ``records`` (a checkpoint's data records): the mean of
    their ``face_fraction`` midpoints, :data:`DEFAULT_FRACTION` where none is recorded."""
    mids = [fraction_midpoint(r["face_fraction"]) for r in records
            if isinstance(r, Mapping) and r.get("face_fraction") is not None]
    return float(np.mean(mids)) if mids else DEFAULT_FRACTION
