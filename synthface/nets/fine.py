"""FineNet (Richardson et al., CVPR 2017): a hypercolumn network that adds detail to the coarse depth.

Fully convolutional: conv blocks at four scales (1, 1/2, 1/4, 1/8), every scale's features
upsampled to full resolution and concatenated (a hypercolumn per pixel), then 1×1 convs →
a depth residual. Depth enters and leaves in units tied to the camera rather than in mm
(:func:`normalize_depth`), so a given shading pattern means the same slope at any distance,
focal length or image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def normalize_depth(depth: Tensor, intrinsics: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image depth normalization for FineNet; returns ``(normalized, mean, footprint)``.

    ``mean`` (B, 1, 1, 1) mm is the masked mean depth z̄ and ``footprint`` (B, 1, 1, 1) = z̄ / f
    (f = mean of fx, fy) is the size in mm of one pixel at that depth. ``normalized`` (B, 1, H, W)
    = (z − z̄) / (footprint · W): depth in image widths, the unit of the image plane normalized
    to [0, 1] (about ±0.2 on a face that fills half the image); 0 off the mask. An empty mask gives
    z̄ = 0, a footprint clamped to 1e-6 and a normalized map of 0.
    """
    m = mask[:, None] if mask.dim() == 3 else mask
    m = m.to(depth.dtype)
    mean = (depth * m).sum((1, 2, 3), keepdim=True) / m.sum((1, 2, 3), keepdim=True).clamp_min(1.0)
    focal = 0.5 * (intrinsics[:, 0, 0] + intrinsics[:, 1, 1]).to(depth.dtype)
    footprint = (mean / focal.reshape(-1, 1, 1, 1)).clamp_min(1e-6)
    return (depth - mean) * m / (footprint * depth.shape[-1]), mean, footprint


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.ReLU(inplace=True))


class FineNet(nn.Module):
    """sRGB image + coarse depth → refined depth (B, 1, H, W) mm: ``ẑ = z_coarse + mask · footprint · Δ``.

    Inputs (``in_channels=4``): image (B, 3, H, W) in [0, 1] and the coarse depth normalized by
    :func:`normalize_depth`. The residual Δ is in pixel footprints (a 1 mm detail on a face at
    5 mm/pixel is Δ = 0.2); the last 1×1 conv starts at zero, so an untrained net returns the
    coarse depth. Scales: ``widths[i]`` channels at 1/2^i resolution (two 3×3 convs each,
    average pooling between); any H, W works (features are resized back to H × W).
    """

    def __init__(self, in_channels: int = 4, widths: Sequence[int] = (16, 32, 48, 64), head: int = 64) -> None:
        super().__init__()
        self.scales = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.scales.append(nn.Sequential(_conv(c, w), _conv(w, w)))
            c = w
        self.head = nn.Sequential(
            nn.Conv2d(sum(widths), head, 1), nn.ReLU(inplace=True),
            nn.Conv2d(head, head // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(head // 2, 1, 1),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def residual(self, x: Tensor) -> Tensor:
        """Network input (B, in_channels, H, W) → Δ (B, 1, H, W) from the hypercolumns."""
        size = x.shape[-2:]
        columns = []
        for i, block in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            columns.append(x if i == 0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.head(torch.cat(columns, dim=1))

    def forward(self, image: Tensor, depth_coarse: Tensor, intrinsics: Tensor, mask: Tensor) -> Tensor:
        """image (B, 3, H, W) sRGB [0, 1], depth_coarse (B, 1, H, W) mm, K (B, 3, 3), mask (B, 1, H, W)
        → refined depth (B, 1, H, W) mm (equal to the coarse depth off the mask)."""
        m = (mask[:, None] if mask.dim() == 3 else mask).to(depth_coarse.dtype)
        z_norm, _, footprint = normalize_depth(depth_coarse, intrinsics, m)
        delta = self.residual(torch.cat([image.to(depth_coarse.dtype), z_norm], dim=1))
        return depth_coarse + m * footprint * delta
