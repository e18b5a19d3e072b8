"""Reconstruct faces in photographs: detect, crop, predict, and write a mesh, a depth map and an overlay.

The photo side (reading, detecting, cropping, the assumed camera) is :mod:`synthface.photo`.

Only this module's :func:`write_outputs` touches files; it writes each one atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import trimesh

from .errors import ReconstructError
from .photo import DEFAULT_FOV_DEG, DEFAULT_MARGIN, crop_square, detect_face
from .shards import atomic_write

if TYPE_CHECKING:  # torch is imported when a reconstruction runs, not with this module (the CLI's --help)
    from .predict import Predictor

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


def depth_relief(depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(H, W) float32 Lambertian shading in [0, 1] of a depth map lit from the camera; 0 off the mask.

    Points and normals come from the rendering layer (the back-projection the SfS loss uses; one-sided
    differences along the mask border).
    """
    import torch

    from .nets.rendering_layer import depth_to_normals, depth_to_points

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
    shade = depth_relief(depth, mask, intrinsics)[..., None]
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

