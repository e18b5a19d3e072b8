"""Reconstruct faces in photographs: detect, crop, predict, and write a mesh, a depth map, an overlay and
a JSON record (box, landmarks, head pose, coefficients, camera).

The photo side (reading, detecting, cropping, the assumed camera) is :mod:`synthface.photo`.

Only this module's :func:`write_outputs` touches files; it writes each one atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import trimesh

from .errors import ReconstructError
from .geometry import rotation_angles, rotation_matrices
from .photo import DEFAULT_FOV_DEG, PhotoCrop, crop_square, detect_face, detect_faces, resolve_detector
from .shards import atomic_write

if TYPE_CHECKING:  # torch is imported when a reconstruction runs, not with this module (the CLI's --help)
    from .predict import Predictor

JSON_FORMAT = "synthface-reconstruction"
JSON_VERSION = 1
DEPTH_SCALE = 10.0
"""The depth PNG stores ``round(depth_mm * DEPTH_SCALE)`` as uint16: 0.1 mm steps up to 6553.5 mm; 0 = no face."""
MESH_FORMATS = ("obj", "ply")


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """One reconstructed face: the crop the networks saw (:class:`~synthface.photo.PhotoCrop`), the geometry
    in its virtual camera (mm), and what it means in the photo (landmarks, pose in the photo's camera)."""

    crop: PhotoCrop
    box: tuple[int, int, int, int]
    """The face's box (x, y, w, h) in the photo's pixels: the detector's, or the one given."""
    detector: str
    """Where ``box`` came from: a key of :data:`~synthface.framing.DETECTOR_FRAMES` (``"frame"``: given)."""
    photo_shape: tuple[int, int]
    """The photo's (height, width) in pixels."""
    vertices: np.ndarray
    """(V, 3) float32 vertices in mm in the crop's virtual camera."""
    triangles: np.ndarray
    """(T, 3) int vertex indices (0-based)."""
    depth: np.ndarray
    """(S, S) float32 camera z in mm (FineNet's when the checkpoint has one); 0 where there is no face."""
    mask: np.ndarray
    """(S, S) bool: where the reconstructed face covers the pixel."""
    overlay: np.ndarray
    """(S, S, 3) uint8 RGB: the depth map shaded (light from the camera) and blended over the crop, with
    the landmarks (green: visible, red: hidden by the face)."""
    landmarks_visible: np.ndarray
    """(68,) bool: not hidden by the estimated face itself (and inside the crop)."""
    landmark_indices: np.ndarray
    """(68,) the model's ibug-68 vertex indices."""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    """``identity``, ``expression``, ``pose`` of the estimate (shard layout, one row each; the crop's camera)."""

    @property
    def landmarks_xy(self) -> np.ndarray:
        """(68, 2) float64 the estimate's ibug-68 landmarks in the photo's pixels (top-left corner origin)."""
        return self.crop.to_photo(self.vertices[self.landmark_indices])

    def photo_pose(self) -> np.ndarray:
        """(6,) yaw, pitch, roll (rad) and translation (mm) in the photo's assumed camera: the crop's
        pose turned by :attr:`PhotoCrop.rotation`. The model under this pose, projected with the photo's
        K, lands on :attr:`landmarks_xy`."""
        pose = np.asarray(self.params["pose"], np.float64)
        turn = self.crop.rotation
        angles = rotation_angles((turn @ rotation_matrices(pose[None, :3])[0])[None])[0]
        return np.concatenate([angles, turn @ pose[3:]])

    def to_json(self) -> dict[str, Any]:
        """The record ``write_outputs`` saves as ``STEM.json`` (README: "Reconstructing photos")."""
        h, w = self.photo_shape
        pose = self.photo_pose()
        k = self.crop.photo_intrinsics
        x0, y0, side = self.crop.window

        def rounded(values: Any, digits: int) -> list:
            return np.round(np.asarray(values, np.float64), digits).tolist()

        return {
            "format": JSON_FORMAT, "version": JSON_VERSION,
            "photo": {"width": w, "height": h},
            "box": {"xywh": list(self.box), "source": self.detector},
            "crop": {"x0": x0, "y0": y0, "side": side, "size": int(self.crop.image.shape[0])},
            "camera": {"intrinsics": rounded(k, 4),
                       "fov_deg": round(float(np.degrees(2 * np.arctan(max(h, w) / 2 / k[0, 0]))), 4),
                       "axes": "OpenCV: x right, y down, z forward; pixels from the top-left corner"},
            "pose": {"yaw_deg": round(float(np.degrees(pose[0])), 4), "pitch_deg": round(float(np.degrees(pose[1])), 4),
                     "roll_deg": round(float(np.degrees(pose[2])), 4), "translation_mm": rounded(pose[3:], 4)},
            "landmarks": {"convention": "ibug-68", "xy": rounded(self.landmarks_xy, 3),
                          "visible": [bool(v) for v in self.landmarks_visible]},
            "identity": rounded(self.params["identity"], 6),
            "expression": rounded(self.params["expression"], 6),
        }


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
                 landmarks_xy: np.ndarray | None = None, landmarks_visible: np.ndarray | None = None,
                 alpha: float = 0.7) -> np.ndarray:
    """The shaded reconstruction (grey) blended with weight ``alpha`` over the crop where it covers it,
    with the landmarks (crop pixels) as dots: green where visible, red where the face hides them."""
    import cv2

    shade = depth_relief(depth, mask, intrinsics)[..., None]
    grey = 255.0 * (0.15 + 0.85 * shade)
    a = alpha * mask[..., None].astype(np.float32)
    out = np.clip((1.0 - a) * crop.astype(np.float32) + a * grey, 0, 255).round().astype(np.uint8)
    if landmarks_xy is not None:
        visible = np.ones(len(landmarks_xy), bool) if landmarks_visible is None else landmarks_visible
        radius = max(1, round(crop.shape[0] / 128))
        for (x, y), seen in zip(np.asarray(landmarks_xy), visible, strict=True):  # 68 dots, not pixels
            cv2.circle(out, (round(x - 0.5), round(y - 0.5)), radius, (0, 220, 0) if seen else (230, 0, 0), -1,
                       lineType=cv2.LINE_AA)
    return out


def reconstruct(image: np.ndarray, predictor: Predictor, *, box: tuple[int, int, int, int] | None = None,
                box_source: str = "frame", detector: str = "auto", fraction: float | None = None,
                fov_deg: float = DEFAULT_FOV_DEG) -> Reconstruction:
    """Reconstruct the largest face of an (H, W, 3) uint8 RGB photo, or the face in ``box``.

    A given ``box`` is, by default, the face's frame (:mod:`synthface.framing`: hairline to chin, cheek
    to cheek); ``box_source`` names another convention (``"dlib"``, ``"haar"``: a box of that detector).
    Without one the largest box of ``detector`` (:data:`~synthface.photo.DETECTORS`) is used. The crop
    frames the face at ``fraction`` of its side (default: the checkpoint's training data's,
    ``Checkpoint.face_fraction``) at the checkpoint's image size. Raises :class:`ReconstructError` when
    no face is found.
    """
    detector = box_source if box is not None else resolve_detector(detector)
    h, w = image.shape[:2]
    if box is None:
        box = detect_face(image, detector)
    elif not (box[0] < w and box[1] < h and box[0] + box[2] > 0 and box[1] + box[3] > 0):
        raise ReconstructError(f"the box {tuple(box)} lies outside the {w} × {h} photo; give one on the face")
    size = predictor.checkpoint.image_size
    fraction = predictor.checkpoint.face_fraction if fraction is None else fraction
    crop = crop_square(image, box, size, fraction, fov_deg, detector)
    k = crop.intrinsics
    images = (crop.image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    pred = predictor.predict(images, k[None])
    depth, mask = pred.depth[0].astype(np.float32), pred.mask[0]
    depth = np.where(mask, depth, 0.0).astype(np.float32)
    overlay = make_overlay(crop.image, depth, mask, k, pred.landmarks_xy[0], pred.landmarks_visible[0])
    return Reconstruction(crop=crop, box=tuple(int(v) for v in box), detector=detector,  # type: ignore[arg-type]
                          photo_shape=(h, w), vertices=pred.vertices[0],
                          triangles=np.asarray(predictor.model.triangles), depth=depth, mask=mask, overlay=overlay,
                          landmarks_visible=pred.landmarks_visible[0], params={n: v[0] for n, v in pred.params.items()},
                          landmark_indices=np.asarray(predictor.model.landmark_indices))


def reconstruct_all(image: np.ndarray, predictor: Predictor, *, detector: str = "auto",
                    fraction: float | None = None, fov_deg: float = DEFAULT_FOV_DEG) -> list[Reconstruction]:
    """Every face ``detector`` finds in the photo, largest first (:class:`ReconstructError` if none)."""
    name = resolve_detector(detector)
    boxes = detect_faces(image, name)
    if not boxes:
        raise ReconstructError("no face found")
    return [reconstruct(image, predictor, box=b, box_source=name, fraction=fraction, fov_deg=fov_deg)
            for b in boxes]


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
    """Write ``stem.obj`` (or ``.ply``), ``stem_depth.png``, ``stem_overlay.png`` and ``stem.json``
    (:meth:`Reconstruction.to_json`) into ``out_dir``, each atomically.

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
             out_dir / f"{stem}_overlay.png": _png(rec.overlay),
             out_dir / f"{stem}.json": (json.dumps(rec.to_json(), indent=1) + "\n").encode()}
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

