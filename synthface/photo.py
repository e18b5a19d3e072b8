"""Photos of faces: read, detect, crop, and the camera assumed for a photo whose camera is unknown.

A photo of an unknown camera gets an assumed pinhole camera: a field of view of :data:`DEFAULT_FOV_DEG`
across the photo's longer side (a typical portrait / phone camera), so its focal length is
``f = (max(H, W) / 2) / tan(fov / 2)`` pixels and its principal point the photo's centre. The crop around
a face (:func:`crop_square`) is the view of a *virtual camera* at the same place, turned toward the face
(no roll) and zoomed so that the face is framed as the generator frames its renders
(:mod:`synthface.framing`): a perspective warp of the photo, exact for every pixel. The networks see the
face on their optical axis, as in training (the synthetic data always has the principal point at the
image centre); :attr:`PhotoCrop.rotation` takes their camera-space results back to the photo's camera.
Geometry is in camera space (OpenCV axes: x right, y down, z forward; millimetres), and its scale is only
as right as the assumed field of view.

Torch-free: shared by ``reconstruct`` (inference) and :class:`~synthface.photos.PhotoDataset` (training).
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, ReconstructError
from .framing import DEFAULT_FRACTION, crop_window

DEFAULT_FOV_DEG = 50.0
"""Assumed field of view (degrees) across the longer side of a photo whose camera is unknown."""
MAX_PHOTO_PIXELS = 100_000_000
"""Photos whose header claims more pixels are refused before decoding: a 40 kB PNG can claim
50000 × 50000 (7.5 GB decoded). 100 MP is more than any camera's photo (a 6000 × 8000 one is 48 MP)."""


@functools.lru_cache(maxsize=1)
def _cascade():  # -> cv2.CascadeClassifier
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ReconstructError(f"OpenCV's face detector {path} is missing (opencv-python-headless 5.x ships no "
                               "Haar cascades); install 'opencv-python-headless<5'")
    return cascade


def _header_size(raw: np.ndarray) -> tuple[int, int] | None:
    """(width, height) as the file's header claims it (Pillow reads only the header), or None if
    Pillow does not know the format."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: the caller decides
        try:
            with Image.open(io.BytesIO(raw.tobytes())) as im:
                return im.size
        except Image.DecompressionBombError as exc:  # beyond twice Pillow's own limit: "w x h pixels"
            found = re.search(r"(\d+) pixels", str(exc))
            return (int(found.group(1)), 1) if found else (MAX_PHOTO_PIXELS + 1, 1)
        except (OSError, ValueError, SyntaxError):  # UnidentifiedImageError is an OSError
            return None


def read_image(path: str | Path) -> np.ndarray:
    """A photo as (H, W, 3) uint8 RGB; raises :class:`ReconstructError` naming the file if it is not
    one, or if its header claims more than :data:`MAX_PHOTO_PIXELS` (refused before decoding)."""
    import cv2

    path = Path(path)
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ReconstructError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    size = _header_size(raw) if raw.size else None
    if size is not None and size[0] * size[1] > MAX_PHOTO_PIXELS:
        shape = f"{size[0]} × {size[1]} pixels" if size[1] > 1 else f"{size[0]} pixels"
        raise ReconstructError(f"{path}: {shape} is more than the {MAX_PHOTO_PIXELS:,} synthface decodes; "
                               "downscale the photo")
    try:
        bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit on a format Pillow does not read
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ReconstructError(f"{path}: OpenCV cannot decode it ({first})") from exc
    if bgr is None:
        raise ReconstructError(f"{path}: not an image OpenCV can decode (JPEG, PNG, TIFF, BMP, WebP, ...)")
    return np.ascontiguousarray(bgr[:, :, ::-1])


PTS_POINTS = 68
"""Points of an ibug-68 ``.pts`` annotation (the 300-W convention)."""


def read_pts(path: str | Path) -> np.ndarray:
    """An ibug ``.pts`` landmark file (``version: 1``, ``n_points: 68``, ``{`` x y lines ``}``) as (68, 2)
    float64 pixel coordinates in synthface's convention (origin at the top-left pixel's corner).

    300-W's coordinates are 1-based pixel centres (Matlab's), so 0.5 is subtracted. Raises
    :class:`ReconstructError` naming the file if it is not such a file or has another point count.
    """
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ReconstructError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    declared = re.search(r"n_points\s*:\s*(\d+)", text)
    body = re.search(r"\{(.*?)\}", text, re.S)
    try:
        points = np.array([[float(v) for v in line.split()] for line in body.group(1).strip().splitlines()
                           if line.strip()]) if body else None
    except ValueError:
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ReconstructError(f"{path}: not an ibug .pts file (version: 1, n_points: 68, then '{{', one 'x y' "
                               "line per point, '}}'); fix or remove it")
    if len(points) != PTS_POINTS or (declared and int(declared.group(1)) != len(points)):
        raise ReconstructError(f"{path}: {len(points)} points (n_points: {declared.group(1) if declared else '?'}), "
                               f"not the {PTS_POINTS} of the ibug-68 convention; give 68-point annotations")
    return points - 0.5


DETECT_SIDE = 1024
"""Photos are searched for faces at most this many pixels on their longer side (area-resized): a
detector's boxes do not depend on a camera's resolution, and a 48 MP photo takes 0.1 s, not 4."""
MIN_FACE = 24
"""The smallest face (pixels) the Haar cascade finds; dlib's HOG detector finds faces from 40 px."""
DETECTORS = ("auto", "dlib", "haar")
"""Face detectors: dlib's HOG frontal-face detector (its model is inside the dlib library: the optional
extra ``synthface[detect]``, a prebuilt wheel) or OpenCV's Haar cascade (always there); ``auto`` is dlib
when it is installed, else Haar. Each detector's box sits on the face differently:
:data:`synthface.framing.DETECTOR_FRAMES` holds how, under the same name."""

DLIB_MARGIN = 1.0
"""dlib boxes scoring more than this below the photo's best box are dropped (its scores are SVM margins:
faces in renders score 1.2 at the median, false alarms on photos 0.0–0.2)."""


@functools.lru_cache(maxsize=1)
def _dlib_detector():  # -> dlib.fhog_object_detector
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def _has_dlib() -> bool:
    try:
        _dlib_detector()
    except ImportError:
        return False
    return True


def resolve_detector(detector: str = "auto") -> str:
    """The detector ``detector`` stands for: ``"auto"`` → ``"dlib"`` if it is installed, else ``"haar"``.

    Raises :class:`ConfigError` for an unknown name and :class:`ReconstructError` when ``"dlib"`` is
    asked for but not installed.
    """
    if detector not in DETECTORS:
        raise ConfigError(f"unknown face detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if detector == "auto":
        return "dlib" if _has_dlib() else "haar"
    if detector == "dlib" and not _has_dlib():
        raise ReconstructError("the dlib face detector is not installed; pip install 'synthface[detect]' "
                               "(a prebuilt wheel), or choose --detector haar")
    return detector


def _boxes(small: np.ndarray, detector: str) -> list[tuple[float, float, float, float]]:
    """The boxes (x, y, w, h) ``detector`` (a resolved name) finds in the already resized image."""
    import cv2

    if detector == "haar":
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        smallest = max(MIN_FACE, min(small.shape[:2]) // 20)
        return [tuple(f) for f in _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                                               minSize=(smallest, smallest))]
    # dlib's window is 80 px: once as the image is (faces that fill it: the pyramid at 2× loses
    # those), once at 2× (faces from 40 px); boxes found at both are one face. A weak box beside a
    # much stronger one is a false alarm (on the astronaut photo: her flag, scored 0.1 beside her face's 1.5).
    found: list[tuple[float, ...]] = []
    for upsample in (0, 1):
        rects, scores, _ = _dlib_detector().run(small, upsample, 0.0)
        found += [(r.left(), r.top(), r.width(), r.height(), s) for r, s in zip(rects, scores, strict=True)]
    found.sort(key=lambda f: -f[4])
    kept: list[tuple[float, ...]] = []
    for f in found:
        if f[4] >= found[0][4] - DLIB_MARGIN and all(box_iou(f[:4], k[:4]) < 0.5 for k in kept):
            kept.append(f)
    return [f[:4] for f in kept]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / max(a[2] * a[3] + b[2] * b[3] - w * h, 1e-9)


def detect_faces(image: np.ndarray, detector: str = "auto") -> list[tuple[int, int, int, int]]:
    """Every frontal face (x, y, w, h) in an (H, W, 3) uint8 RGB image, largest first, by ``detector``
    (:data:`DETECTORS`; :func:`resolve_detector` says which one ``"auto"`` is).

    Raises :class:`ReconstructError` for an image smaller than :data:`MIN_FACE` on a side.
    """
    import cv2

    name = resolve_detector(detector)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_FACE:
        raise ReconstructError(f"{w} × {h} pixels is too small to hold a face the detector finds (at least "
                               f"{MIN_FACE} px); give a larger photo")
    scale = min(1.0, DETECT_SIDE / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    boxes = [tuple(round(v / scale) for v in f) for f in _boxes(np.ascontiguousarray(small), name)]
    return sorted(boxes, key=lambda f: -f[2] * f[3])  # type: ignore[arg-type, return-value]


def detect_face(image: np.ndarray, detector: str = "auto") -> tuple[int, int, int, int]:
    """The largest frontal face (x, y, w, h) of :func:`detect_faces`; :class:`ReconstructError` when there is none."""
    faces = detect_faces(image, detector)
    if not faces:
        raise ReconstructError("no face found")
    return faces[0]


def photo_focal(shape: tuple[int, ...], fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Assumed focal length (pixels) of a photo of ``shape`` (H, W, ...): ``fov_deg`` across its longer side."""
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"field of view {fov_deg}° is outside [1, 170]")
    return max(shape[0], shape[1]) / 2.0 / math.tan(math.radians(fov_deg) / 2.0)


@dataclass(frozen=True, eq=False)
class PhotoCrop:
    """A face crop: the view of a virtual camera turned toward the face (module docstring)."""

    image: np.ndarray
    """(S, S, 3) uint8 RGB, what the networks see."""
    intrinsics: np.ndarray
    """(3, 3) float32 K of the virtual camera in the crop's pixels (principal point at the centre)."""
    rotation: np.ndarray
    """(3, 3) float64: virtual camera axes → the photo camera's (``x_photo = rotation @ x_virtual``)."""
    photo_intrinsics: np.ndarray
    """(3, 3) float64 the photo's assumed K (:func:`photo_focal`, principal point at its centre)."""
    window: tuple[int, int, int]
    """(x0, y0, side): the square in the photo's pixels the crop shows, around its centre (exact at the
    centre; a crop turned off the photo's axis covers a slightly skewed square)."""

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) virtual-camera points (mm) → (..., 2) the photo's pixels."""
        x = np.asarray(points, np.float64) @ self.rotation.T @ self.photo_intrinsics.T
        return x[..., :2] / x[..., 2:]


def _turn_toward(direction: np.ndarray) -> np.ndarray:
    """(3, 3) the smallest rotation taking the optical axis (0, 0, 1) onto the unit ``direction``."""
    d = direction / np.linalg.norm(direction)
    axis = np.cross([0.0, 0.0, 1.0], d)
    s, c = np.linalg.norm(axis), d[2]
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * cross + (1.0 - c) * cross @ cross  # Rodrigues


def _corner_to_centre(h: np.ndarray) -> np.ndarray:
    """A homography between corner-origin pixel coordinates (K's) → OpenCV's pixel-centre ones."""
    shift = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return np.linalg.inv(shift) @ h @ shift


def crop_square(image: np.ndarray, box: tuple[int, int, int, int], size: int, fraction: float = DEFAULT_FRACTION,
                fov_deg: float = DEFAULT_FOV_DEG, detector: str = "auto") -> PhotoCrop:
    """The ``size`` px view of a virtual camera turned toward the face frame ``box`` suggests, in which
    that frame spans ``fraction`` of the side (:func:`synthface.framing.crop_window`).

    ``detector`` names how ``box`` sits on the face (:data:`~synthface.framing.DETECTOR_FRAMES`: a
    detector's box — ``"auto"``: :func:`detect_faces`' default — or ``"frame"`` for a box that is the
    frame). The virtual camera's focal length is the photo's (:func:`photo_focal`) scaled by
    ``size / side``; pixels it sees outside the photo repeat the edge. A photo larger than the crop
    needs is first area-resized, so the warp does not alias.
    """
    import cv2

    x, y, side = crop_window(box, fraction, resolve_detector() if detector == "auto" else detector)
    hh, ww = image.shape[:2]
    f = photo_focal(image.shape, fov_deg)
    photo_k = np.array([[f, 0.0, ww / 2.0], [0.0, f, hh / 2.0], [0.0, 0.0, 1.0]])
    centre = np.array([x + side / 2.0, y + side / 2.0, 1.0])
    rotation = _turn_toward(np.linalg.solve(photo_k, centre))
    fv = f * size / side
    virtual_k = np.array([[fv, 0.0, size / 2.0], [0.0, fv, size / 2.0], [0.0, 0.0, 1.0]])
    shrink = min(1.0, size / side)
    src = image
    if shrink < 1.0:
        src = cv2.resize(image, (max(1, round(ww * shrink)), max(1, round(hh * shrink))), interpolation=cv2.INTER_AREA)
    scale = np.diag([src.shape[1] / ww, src.shape[0] / hh, 1.0])
    to_src = scale @ photo_k @ rotation @ np.linalg.inv(virtual_k)  # crop pixel → (resized) photo pixel
    crop = cv2.warpPerspective(np.ascontiguousarray(src), _corner_to_centre(to_src), (size, size),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return PhotoCrop(image=crop, intrinsics=virtual_k.astype(np.float32), rotation=rotation, photo_intrinsics=photo_k,
                     window=(round(x), round(y), max(1, round(side))))
