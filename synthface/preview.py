"""Contact sheets so a person can look at a dataset: image, depth, mask, segmentation, landmarks per sample."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filters for h5py)
import numpy as np
from PIL import Image, ImageDraw

from .errors import ShardError
from .shards import read_manifest


def depth_to_grey(depth: np.ndarray) -> np.ndarray:
    """(B, H, W) mm → uint8, near = bright, per-sample range over the face; background black."""
    face = depth > 0
    big, small = np.where(face, depth, -np.inf), np.where(face, depth, np.inf)
    far = big.max(axis=(1, 2), keepdims=True)
    near = small.min(axis=(1, 2), keepdims=True)
    scaled = (far - depth) / np.maximum(far - near, 1e-6)
    return np.where(face, 40 + 215 * np.clip(scaled, 0, 1), 0).astype(np.uint8)


def read_samples(out_dir: str | Path, count: int) -> dict[str, np.ndarray]:
    """The first ``count`` samples' image, depth, mask and landmarks, across shards."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("image", "depth", "mask", "landmarks/xy",
                                                            "landmarks/visible", "segmentation")}
    left = count
    for shard in manifest["shards"]:
        if left <= 0:
            break
        path = out / shard["file"]
        try:
            with h5py.File(path, "r") as f:
                for key in parts:
                    if key in f:  # format 1 has no segmentation
                        parts[key].append(f[key][:left])
        except (OSError, KeyError) as exc:  # missing, truncated, 0 bytes, a chunk whose checksum fails
            what = "missing" if not path.exists() else f"unreadable ({exc})"
            raise ShardError(f"{path}: {what}; run 'synthface verify {out}', then 'synthface generate "
                             "--resume' to redo damaged shards") from exc
        left -= shard["count"]
    return {k: np.concatenate(v) for k, v in parts.items() if v}


CLASS_COLOURS = np.array([
    (0, 0, 0), (224, 172, 140), (240, 120, 60), (110, 70, 40), (30, 200, 230), (200, 30, 60), (110, 20, 40),
    (50, 160, 80), (150, 110, 200), (120, 140, 230), (250, 210, 80), (240, 240, 240), (60, 90, 170),
], np.uint8)
"""Preview colour of each segmentation class (synthface.model.SEGMENTATION_CLASSES order)."""


def contact_sheet(samples: dict[str, np.ndarray], columns: int = 4) -> Image.Image:
    """One cell per sample: image | depth | mask (| segmentation, format 2) stacked, then the image with
    landmarks (green visible, red hidden)."""
    images = samples["image"]
    b, h, w, _ = images.shape
    grey = depth_to_grey(samples["depth"])
    mask = samples["mask"].astype(np.uint8) * 255
    cells = []
    for i in range(b):
        overlay = Image.fromarray(images[i]).resize((w * 2, h * 2), Image.NEAREST)
        draw = ImageDraw.Draw(overlay)
        for (x, y), vis in zip(samples["landmarks/xy"][i] * 2, samples["landmarks/visible"][i], strict=True):
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(40, 220, 60) if vis else (230, 40, 40))
        panels = [images[i], np.repeat(grey[i][..., None], 3, -1), np.repeat(mask[i][..., None], 3, -1)]
        if "segmentation" in samples:
            panels.append(CLASS_COLOURS[np.minimum(samples["segmentation"][i], len(CLASS_COLOURS) - 1)])
        small = np.concatenate(panels, axis=0)  # (k·h, w, 3)
        left = Image.fromarray(small).resize((2 * w // len(panels), 2 * h), Image.BILINEAR)  # k panels, 2/k scale
        cell = Image.new("RGB", (left.width + overlay.width + 4, h * 2 + 4), (30, 30, 30))
        cell.paste(left, (0, 2))
        cell.paste(overlay, (left.width + 4, 2))
        cells.append(cell)
    rows = -(-b // columns)
    cw, ch = cells[0].size
    sheet = Image.new("RGB", (min(b, columns) * cw, rows * ch), (30, 30, 30))
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % columns) * cw, (i // columns) * ch))
    return sheet
