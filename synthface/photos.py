"""Unlabelled face photos as a torch Dataset, for FineNet's unsupervised stage (``--real-images DIR``).

The photos get exactly the treatment :mod:`synthface.reconstruct` gives a photo at inference: the
largest face found by the detector (``detector``: dlib's when installed, else OpenCV's Haar cascade;
:func:`~synthface.photo.resolve_detector`), the crop that frames it as the training renders are
(:mod:`synthface.framing`, the data's face fraction) at the networks' image size, and the assumed
camera of :func:`~synthface.photo.crop_square` — so FineNet trains on the framing it will later see.
Faces are detected once, when the dataset is built (photos where none is found are left out and
listed in :attr:`PhotoDataset.skipped`); items are read lazily, in the process that asks, like
:class:`~synthface.data.ShardDataset`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import ConfigError, ReconstructError
from .framing import DEFAULT_FRACTION
from .photo import DEFAULT_FOV_DEG, crop_square, detect_face, read_image, resolve_detector

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
"""File name endings taken as photos (case-insensitive), searched recursively."""


def find_photos(folder: str | os.PathLike) -> list[Path]:
    """Every photo under ``folder`` (recursively), sorted by path: the dataset's fixed order."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--real-images {root}: not a directory; pass a folder of face photos")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class PhotoDataset(Dataset):
    """Face crops of the photos under ``folder``: items ``{"image": (3, S, S) float32 sRGB in [0, 1],
    "intrinsics": (3, 3) float32 K of the crop in pixels, "index": () int64 position}``.

    Raises :class:`~synthface.errors.ConfigError` when ``folder`` is not a directory or no photo in it
    shows a detectable face.
    """

    def __init__(self, folder: str | os.PathLike, image_size: int, *, fraction: float = DEFAULT_FRACTION,
                 fov_deg: float = DEFAULT_FOV_DEG, detector: str = "auto") -> None:
        self.folder, self.image_size, self.fraction, self.fov_deg = Path(folder), int(image_size), fraction, fov_deg
        self.detector = resolve_detector(detector)
        files = find_photos(self.folder)
        self.paths: list[Path] = []
        self.boxes: list[tuple[int, int, int, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        """Photos left out, with why (unreadable, no face)."""
        for path in files:
            try:
                self.boxes.append(detect_face(read_image(path), self.detector))
                self.paths.append(path)
            except ReconstructError as exc:
                self.skipped.append((path, str(exc)))
        if not self.paths:
            raise ConfigError(f"--real-images {self.folder}: no face found in any of its {len(files)} photos "
                              f"({', '.join(IMAGE_SUFFIXES)}); add photos showing a frontal face")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        crop = crop_square(read_image(self.paths[i]), self.boxes[i], self.image_size, self.fraction, self.fov_deg,
                           self.detector)
        image = np.ascontiguousarray(crop.image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)
        return {"image": torch.from_numpy(image), "intrinsics": torch.from_numpy(crop.intrinsics),
                "index": torch.tensor(i, dtype=torch.int64)}


__all__ = ["IMAGE_SUFFIXES", "PhotoDataset", "find_photos"]
