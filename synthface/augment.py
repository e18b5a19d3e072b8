"""Camera degradations for training images, applied as shards are read (the shards stay clean).

Photos are blurred, noisy, JPEG-compressed and colour-shifted; renders are not, and a network
trained on clean renders learns to rely on that. :func:`degrade` applies, each with its own
probability, a colour shift (brightness, contrast, saturation, gamma), Gaussian defocus or motion
blur, sensor noise, greyscale and JPEG, in that order — the order a camera's pipeline applies them.
The filters are kornia's (pure torch, so they run in DataLoader workers on any torch build) and the
JPEG codec is libjpeg through Pillow. Every random choice comes from the generator passed in: the
dataset seeds it per sample and epoch, so a degraded item is reproducible and torch's global RNG is
never touched. Only pixels change: landmarks, K, depth and mask stay valid.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from kornia.color import rgb_to_grayscale
from kornia.enhance import adjust_brightness, adjust_contrast, adjust_gamma, adjust_saturation
from kornia.filters import gaussian_blur2d, motion_blur
from PIL import Image

from .errors import ConfigError

Range = tuple[float, float]


@dataclass(frozen=True)
class Degradations:
    """Probabilities and uniform ranges of each degradation (images in [0, 1], sizes in pixels)."""

    colour_prob: float = 0.8
    brightness: Range = (-0.08, 0.08)
    """Added to every channel."""
    contrast: Range = (0.75, 1.25)
    saturation: Range = (0.6, 1.4)
    gamma: Range = (0.75, 1.35)
    blur_prob: float = 0.3
    blur_sigma: Range = (0.3, 1.5)
    motion_prob: float = 0.1
    motion_length: Range = (3, 9)
    """Kernel length of a straight motion blur at a random angle (odd, rounded down)."""
    noise_prob: float = 0.5
    noise_std: Range = (0.005, 0.04)
    """Per-pixel Gaussian noise, independent per channel."""
    grey_prob: float = 0.05
    jpeg_prob: float = 0.5
    jpeg_quality: Range = (30, 95)

    def __post_init__(self) -> None:
        for name in ("colour_prob", "blur_prob", "motion_prob", "noise_prob", "grey_prob", "jpeg_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"Degradations.{name} must be a probability in [0, 1], got {getattr(self, name)}")
        for name in ("contrast", "saturation", "gamma", "blur_sigma", "motion_length", "noise_std", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ConfigError(f"Degradations.{name} must be a range 0 <= min <= max, got {(lo, hi)}")
        if self.jpeg_quality[1] > 100:
            raise ConfigError(f"Degradations.jpeg_quality must lie in [0, 100], got {self.jpeg_quality}")


def degrade(image: torch.Tensor, rng: np.random.Generator, d: Degradations = Degradations()) -> torch.Tensor:
    """(3, H, W) float32 sRGB in [0, 1] → the same, degraded with draws from ``rng``.

    The generator is consumed the same way whatever is applied (a fixed number of draws per step),
    so changing one probability does not reshuffle the others' choices.
    """
    x = image[None]
    u = rng.random(6)  # one gate per step
    draws = rng.random(10)  # the steps' parameters, in fixed positions
    if u[0] < d.colour_prob:
        x = adjust_brightness(x, _lerp(d.brightness, draws[0]))
        x = adjust_contrast(x, _lerp(d.contrast, draws[1]))
        x = adjust_saturation(x, _lerp(d.saturation, draws[2]))
        x = adjust_gamma(x.clamp(0.0, 1.0), _lerp(d.gamma, draws[3]))
    if u[1] < d.blur_prob:
        sigma = _lerp(d.blur_sigma, draws[4])
        size = 2 * int(np.ceil(3 * sigma)) + 1
        x = gaussian_blur2d(x, (size, size), torch.tensor([[sigma, sigma]]))
    if u[2] < d.motion_prob:
        length = max(3, int(_lerp(d.motion_length, draws[5])) // 2 * 2 + 1)
        x = motion_blur(x, length, torch.tensor([360.0 * float(draws[6])]), torch.tensor([0.0]))
    if u[3] < d.noise_prob:
        g = torch.Generator().manual_seed(int(rng.integers(2**63)))
        x = x + _lerp(d.noise_std, draws[7]) * torch.randn(x.shape, generator=g)
    if u[4] < d.grey_prob:
        x = rgb_to_grayscale(x.clamp(0.0, 1.0)).expand(-1, 3, -1, -1)
    x = x.clamp(0.0, 1.0)[0]
    if u[5] < d.jpeg_prob:
        x = _jpeg(x, round(_lerp(d.jpeg_quality, draws[8])))
    return x.contiguous()


def _lerp(bounds: Range, t: float) -> float:
    return float(bounds[0] + (bounds[1] - bounds[0]) * t)


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode with libjpeg (Pillow) at ``quality``: the artefacts photos carry."""
    pixels = (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as im:
        decoded = np.asarray(im.convert("RGB"), np.float32) / 255.0
    return torch.from_numpy(decoded.transpose(2, 0, 1).copy())
