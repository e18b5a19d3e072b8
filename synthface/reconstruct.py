"""Reconstruct faces in photographs: detect, crop, predict, and write a mesh, a depth map and an overlay.

A photo of an unknown camera gets an assumed pinhole camera: a horizontal-or-vertical field of view of
:data:`DEFAULT_FOV_DEG` across the photo's longer side (a typical portrait / phone camera), so the
photo's focal length is ``f = (max(H, W) / 2) / tan(fov / 2)`` pixels. The square crop around the face is
treated as the view of a virtual camera turned toward the face: its focal length is ``f`` scaled by the
crop's resize factor, and its principal point is the crop's centre — the framing the networks were trained
on (the synthetic data always has the principal point at the image centre). The approximation ignores
the small perspective skew of an off-axis crop. Geometry is in that virtual camera's space (OpenCV
axes: x right, y down, z forward; millimetres), and its scale is only as right as the assumed field of view.

Only this module's :func:`write_outputs` touches files; it writes each one atomically.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh

from .errors import ReconstructError
from .models.rendering_layer import depth_to_normals, depth_to_points
from .predict import Predictor
from .shards import atomic_write

DEFAULT_FOV_DEG = 50.0
"""Assumed field of view (degrees) across the longer side of a photo whose camera is unknown."""
DEFAULT_MARGIN = 0.4
"""Fraction of the detected box's side added on each side of it for the square crop (side = 1.8 × box)."""
DEPTH_SCALE = 10.0
"""The depth PNG stores ``round(depth_mm * DEPTH_SCALE)`` as uint16: 0.1 mm steps up to 6553.5 mm; 0 = no face."""
MESH_FORMATS = ("obj", "ply")


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """One reconstructed face: the crop the networks saw and the geometry in its virtual camera (mm)."""

    crop: np.ndarray
    """(S, S, 3) uint8 RGB crop at the checkpoint's image size."""
    intrinsics: np.ndarray
    """(3, 3) float32 pinhole K of the crop in pixels (top-left pixel corner origin)."""
    box: tuple[int, int, int, int]
    """Detected face (x, y, w, h) in the photo's pixels."""
    vertices: np.ndarray
    """(V, 3) float32 camera-space vertices in mm."""
    triangles: np.ndarray
    """(T, 3) int vertex indices (0-based)."""
    depth: np.ndarray
    """(S, S) float32 camera z in mm (FineNet's when the checkpoint has one); 0 where there is no face."""
    mask: np.ndarray
    """(S, S) bool: where the reconstructed face covers the pixel."""
    overlay: np.ndarray
    """(S, S, 3) uint8 RGB: the depth map shaded (light from the camera) and blended over the crop."""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    """``identity``, ``expression``, ``pose`` of the estimate (shard layout, one row each)."""


@functools.lru_cache(maxsize=1)
def _cascade():  # -> cv2.CascadeClassifier
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ReconstructError(f"OpenCV's face detector {path} is missing (opencv-python-headless 5.x ships no "
                               "Haar cascades); install 'opencv-python-headless<5'")
    return cascade


def read_image(path: str | Path) -> np.ndarray:
    """A photo as (H, W, 3) uint8 RGB; raises :class:`ReconstructError` naming the file if it is not one."""
    import cv2

    path = Path(path)
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise ReconstructError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
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


def shade_depth(depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(H, W) float32 Lambertian shading in [0, 1] of a depth map lit from the camera; 0 off the mask.

    Points and normals come from the rendering layer (the back-projection the SfS loss uses; one-sided
    differences along the mask border).
    """
    z = torch.from_numpy(np.where(mask, depth, 0).astype(np.float32))[None, None]
    k = torch.from_numpy(np.asarray(intrinsics, np.float32))[None]
    m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
    normals = depth_to_normals(z, k, m)[0]
    points = depth_to_points(z, k)[0]
    view = -points / points.norm(dim=0, keepdim=True).clamp_min(1e-12)  # towards the camera
    return ((normals * view).sum(0).abs() * m[0, 0]).numpy().astype(np.float32)


def make_overlay(crop: np.ndarray, depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray,
                 alpha: float = 0.7) -> np.ndarray:
    """The shaded reconstruction (grey) blended with weight ``alpha`` over the crop where it covers it."""
    shade = shade_depth(depth, mask, intrinsics)[..., None]
    grey = 255.0 * (0.15 + 0.85 * shade)
    a = alpha * mask[..., None].astype(np.float32)
    return np.clip((1.0 - a) * crop.astype(np.float32) + a * grey, 0, 255).round().astype(np.uint8)


def reconstruct(image: np.ndarray, predictor: Predictor, *, box: tuple[int, int, int, int] | None = None,
                margin: float = DEFAULT_MARGIN, fov_deg: float = DEFAULT_FOV_DEG) -> Reconstruction:
    """Reconstruct the largest face of an (H, W, 3) uint8 RGB photo (or the face in ``box``).

    The crop is made at the checkpoint's training image size. Raises :class:`ReconstructError` when no
    face is found.
    """
    if box is None:
        box = detect_face(image)
    size = predictor.checkpoint.image_size
    crop, k = crop_square(image, box, size, margin, fov_deg)
    images = (crop.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    pred = predictor.predict(images, k[None])
    depth, mask = pred.depth[0].astype(np.float32), pred.mask[0]
    depth = np.where(mask, depth, 0.0).astype(np.float32)
    return Reconstruction(crop=crop, intrinsics=k, box=tuple(int(v) for v in box),  # type: ignore[arg-type]
                          vertices=pred.vertices[0], triangles=np.asarray(predictor.model.triangles),
                          depth=depth, mask=mask, overlay=make_overlay(crop, depth, mask, k),
                          params={n: v[0] for n, v in pred.params.items()})


def _png(array: np.ndarray) -> bytes:
    import cv2

    if array.ndim == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])  # RGB → OpenCV's BGR
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise ReconstructError("cannot encode a PNG")
    return buf.tobytes()


def depth_png(depth: np.ndarray) -> bytes:
    """16-bit PNG of depth in units of 1 / :data:`DEPTH_SCALE` mm (0 = no face; clipped at 65535)."""
    return _png(np.clip(np.round(depth * DEPTH_SCALE), 0, 65535).astype(np.uint16))


def write_outputs(rec: Reconstruction, out_dir: str | Path, stem: str, *, mesh_format: str = "obj") -> list[Path]:
    """Write ``stem.obj`` (or ``.ply``), ``stem_depth.png`` and ``stem_overlay.png`` into ``out_dir``, atomically.

    The mesh is in camera space (mm, OpenCV axes: y down, so viewers show it upside down); the depth
    PNG is uint16 of depth × :data:`DEPTH_SCALE` (0.1 mm steps, 0 = no face). Returns the paths written.
    """
    if mesh_format not in MESH_FORMATS:
        raise ValueError(f"mesh format {mesh_format!r} is not one of {MESH_FORMATS}")
    out_dir = Path(out_dir)
    mesh = trimesh.Trimesh(vertices=np.asarray(rec.vertices, np.float64), faces=np.asarray(rec.triangles),
                           process=False, validate=False)
    exported = mesh.export(file_type=mesh_format)
    mesh_bytes = exported.encode() if isinstance(exported, str) else bytes(exported)
    files = {out_dir / f"{stem}.{mesh_format}": mesh_bytes,
             out_dir / f"{stem}_depth.png": depth_png(rec.depth),
             out_dir / f"{stem}_overlay.png": _png(rec.overlay)}
    for path, data in files.items():
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise ReconstructError(f"cannot write {path}: {exc.strerror or exc}; "
                                   "check free space and permissions") from exc
    return list(files)


def read_depth_png(path: str | Path) -> np.ndarray:
    """A depth PNG written by :func:`write_outputs` back as (H, W) float32 mm (0 = no face)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.float32) / DEPTH_SCALE

