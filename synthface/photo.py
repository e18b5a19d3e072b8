"""Photos of faces: read, detect, crop, and the camera assumed for a photo whose camera is unknown.

A photo of an unknown camera gets an assumed pinhole camera: a horizontal-or-vertical field of view of
:data:`DEFAULT_FOV_DEG` across the photo's longer side (a typical portrait / phone camera), so the
photo's focal length is ``f = (max(H, W) / 2) / tan(fov / 2)`` pixels. The square crop around the face is
treated as the view of a virtual camera turned toward the face: its focal length is ``f`` scaled by the
crop's resize factor, and its principal point is the crop's centre — the framing the networks were trained
on (the synthetic data always has the principal point at the image centre). The approximation ignores
the small perspective skew of an off-axis crop. Geometry is in that virtual camera's space (OpenCV
axes: x right, y down, z forward; millimetres), and its scale is only as right as the assumed field of view.

Torch-free: shared by ``reconstruct`` (inference) and :class:`~synthface.photos.PhotoDataset` (training).
"""

from __future__ import annotations

import functools
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np

from .errors import ReconstructError

DEFAULT_FOV_DEG = 50.0
"""Assumed field of view (degrees) across the longer side of a photo whose camera is unknown."""
DEFAULT_MARGIN = 0.4
"""Fraction of the detected box's side added on each side of it for the square crop (side = 1.8 × box)."""
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


def detect_face(image: np.ndarray) -> tuple[int, int, int, int]:
    """The largest frontal face (x, y, w, h) in an (H, W, 3) uint8 RGB image, by OpenCV's Haar cascade.

    Raises :class:`ReconstructError` when there is none.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    smallest = max(24, min(image.shape[:2]) // 20)
    faces = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
    if len(faces) == 0:
        raise ReconstructError("no face found")
    x, y, w, h = max((tuple(int(v) for v in f) for f in faces), key=lambda f: f[2] * f[3])
    return x, y, w, h


def photo_focal(shape: tuple[int, ...], fov_deg: float = DEFAULT_FOV_DEG) -> float:
    """Assumed focal length (pixels) of a photo of ``shape`` (H, W, ...): ``fov_deg`` across its longer side."""
    if not 1.0 <= fov_deg <= 170.0:
        raise ValueError(f"field of view {fov_deg}° is outside [1, 170]")
    return max(shape[0], shape[1]) / 2.0 / math.tan(math.radians(fov_deg) / 2.0)


def crop_square(image: np.ndarray, box: tuple[int, int, int, int], size: int, margin: float = DEFAULT_MARGIN,
                fov_deg: float = DEFAULT_FOV_DEG) -> tuple[np.ndarray, np.ndarray]:
    """The square around ``box`` (grown by ``margin`` × its side on each side), resized to ``size`` px, and its K.

    Parts of the square outside the photo are filled by repeating the edge pixels. K has the photo's
    assumed focal length (:func:`photo_focal`) scaled by the resize and the principal point at the centre
    (see the module docstring).
    """
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0, n = round(cx - side / 2.0), round(cy - side / 2.0), max(1, round(side))
    hh, ww = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + n - ww, y0 + n - hh)
    src = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    square = src[y0 + pad:y0 + pad + n, x0 + pad:x0 + pad + n]
    interp = cv2.INTER_AREA if n > size else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interp)
    f = photo_focal(image.shape, fov_deg) * size / n
    k = np.array([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]], np.float32)
    return crop, k
