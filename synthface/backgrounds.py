"""What lies behind the head: the procedural backgrounds' noise texture, and a user's image folder.

The procedural backgrounds are drawn by the renderer (``render_shaders/background.frag``) from
per-sample parameters and one fixed :func:`fractal_noise` texture.

``background.mode = "images"`` (``--backgrounds DIR``) shows a crop of one file per sample. Which
file, the crop, the mirror flip and the colour jitter are sampled parameters (``params/background``,
drawn from ``(seed, i)`` like the rest); the file's sha256 is recorded per sample, so a dataset says
exactly which pixels lie behind each face. Every file is opened when the folder is scanned: a file
that is not a readable image stops the run before it starts, never in the middle.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .errors import ConfigError
from .params import BACKGROUND
from .resources import file_sha256

MAX_PIXELS = 100_000_000
"""Larger images are refused at scan time (a decompression bomb, or a mistake)."""
CACHE_PIXELS = 64_000_000
"""Decoded images kept in memory per process (about 190 MB of RGB)."""


@dataclass(frozen=True)
class BackgroundImages:
    """The image files of a folder (sorted by relative path) and their sha256s."""

    root: Path
    files: tuple[Path, ...]
    sha256: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_sha", {s: f for f, s in zip(self.files, self.sha256, strict=True)})
        object.__setattr__(self, "_cache", OrderedDict())

    def __len__(self) -> int:
        return len(self.files)

    def record(self) -> dict[str, object]:
        """What a run stores about the folder: file count and one sha256 over the sorted listing
        (relative paths and contents), since the listing decides which file sample i shows."""
        digest = hashlib.sha256()
        for path, sha in zip(self.files, self.sha256, strict=True):
            digest.update(f"{path.relative_to(self.root).as_posix()}\0{sha}\n".encode())
        return {"directory": str(self.root), "files": len(self.files), "listing_sha256": digest.hexdigest()}

    @classmethod
    def scan(cls, directory: str | Path) -> BackgroundImages:
        """Every regular file below ``directory`` (hidden ones skipped) must decode as an image."""
        if not str(directory):
            raise ConfigError("background mode 'images' needs a folder; pass --backgrounds DIR "
                              "(or set background.directory)")
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(f"--backgrounds {root}: not a directory; give a folder of images")
        files = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not files:
            raise ConfigError(f"--backgrounds {root}: no files; put background images (JPEG, PNG, ...) there")
        for path in files:
            _check_image(path)
        return cls(root, tuple(files), tuple(file_sha256(p) for p in files))

    def _image(self, sha: str) -> Image.Image:
        """The decoded RGB image with this sha256 (LRU-cached by pixel count)."""
        cache: OrderedDict[str, Image.Image] = self._cache  # type: ignore[attr-defined]
        if sha in cache:
            cache.move_to_end(sha)
            return cache[sha]
        path = self._by_sha.get(sha)  # type: ignore[attr-defined]
        if path is None:
            raise ConfigError(f"no background image with sha256 {sha} in {self.root}; "
                              "render with the folder the parameters were drawn from")
        with Image.open(path) as im:
            image = im.convert("RGB")
        cache[sha] = image
        while sum(i.width * i.height for i in cache.values()) > CACHE_PIXELS and len(cache) > 1:
            cache.popitem(last=False)
        return image

    def crops(self, background: np.ndarray, sha256: np.ndarray, size: int) -> np.ndarray:
        """(B, size, size, 3) uint8 sRGB: each row's crop, flip, jitter and blur (``params/background``)."""
        out = np.zeros((len(background), size, size, 3), np.uint8)
        for row, (bg, sha) in enumerate(zip(background, sha256, strict=True)):
            image = self._image(sha.decode() if isinstance(sha, bytes) else str(sha))
            side = float(bg[BACKGROUND["crop_size"]]) * min(image.size)
            x0 = float(bg[BACKGROUND["crop_x"]]) * (image.width - side)
            y0 = float(bg[BACKGROUND["crop_y"]]) * (image.height - side)
            crop = image.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
            if bg[BACKGROUND["flip"]] > 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            if bg[BACKGROUND["blur"]] > 0:
                crop = crop.filter(ImageFilter.GaussianBlur(float(bg[BACKGROUND["blur"]])))
            out[row] = np.asarray(crop)
        return _jitter(out, background)


def _jitter(images: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Brightness, contrast (about each image's mean) and saturation (about its grey), batched, sRGB."""
    x = images.astype(np.float32) / 255.0
    col = {k: background[:, BACKGROUND[k], None, None, None].astype(np.float32)
           for k in ("brightness", "contrast", "saturation")}
    x = x * col["brightness"]
    x = x.mean(axis=(1, 2, 3), keepdims=True) + (x - x.mean(axis=(1, 2, 3), keepdims=True)) * col["contrast"]
    grey = x.mean(axis=3, keepdims=True)
    x = grey + (x - grey) * col["saturation"]
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_image(path: Path) -> None:
    """Decode ``path`` (reduced, where the format allows) or raise one ConfigError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ConfigError(f"--backgrounds: {path} is {im.width}×{im.height} pixels, over the "
                                      f"{MAX_PIXELS:,}-pixel limit; shrink it or remove it from the folder")
                im.draft("RGB", (256, 256))  # JPEG: decode at a fraction of the size; a check, not the pixels used
                im.load()
    except ConfigError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ConfigError(f"--backgrounds: {path} is not a readable image ({exc}); remove it from the folder "
                          "or replace it") from exc


def fractal_noise(size: int = 256, channels: int = 4, *, beta: float = 1.6, seed: int = 0) -> np.ndarray:
    """(size, size, channels) uint8 tileable fractal noise, each channel uniform over [0, 255].

    Spectral synthesis: white noise filtered to a 1/f^β amplitude spectrum (β ≈ 1.6: cloud-like, detail at
    every scale), then rank-normalized so a threshold t covers a fraction t of the texture. A fixed
    seed: the procedural backgrounds' only randomness is in their per-sample parameters.
    """
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    radius = np.hypot(f[:, None], f[None, :])
    amplitude = np.where(radius > 0, np.maximum(radius, 1.0 / size) ** -beta, 0.0)
    spectrum = np.fft.fft2(rng.standard_normal((channels, size, size)), axes=(1, 2)) * amplitude
    field = np.fft.ifft2(spectrum, axes=(1, 2)).real.reshape(channels, -1)
    ranks = np.argsort(np.argsort(field, axis=1), axis=1)
    return (ranks * (256.0 / field.shape[1])).astype(np.uint8).reshape(channels, size, size).transpose(1, 2, 0)
