"""CoarseNet (Richardson et al., CVPR 2017, Fig. 3): iterative regression of 3DMM parameters.

Each step sees the image together with a rendering of the current estimate (PNCC and normals,
drawn by :class:`synthface.feedback.FeedbackRenderer`; the loop is :func:`synthface.feedback.refine`)
and predicts an *update* of the parameter vector,
so the network only has to learn corrections. Parameters travel as one normalized vector
(:class:`synthface.targets.ParameterNormalizer`: per-column ``(p − mean) / std``), in which the
network's output is ``O(1)`` whatever the units (std units, radians, mm).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

FEEDBACK_CHANNELS = 6
"""PNCC (3, in [0, 1]) then camera-space normals (3, in [-1, 1]); 0 on the background."""


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(min(8, channels), channels) if kind == "group" else nn.BatchNorm2d(channels)


class ResidualBlock(nn.Module):
    """Basic ResNet block (two 3×3 convs), with a 1×1 projection when width or stride change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, norm: str = "group") -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), _norm(norm, c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), _norm(norm, c_out),
        )
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(norm, c_out)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class CoarseNet(nn.Module):
    """Image + feedback (B, in_channels, H, W) → parameter-vector update (B, n_params).

    7×7 conv 32 stride 2; ``blocks`` residual blocks at each width of ``widths`` (stride 2 at
    the start of every stage after the first); 3×3 conv; global average pooling; two fully
    connected layers. Any input size ≥ 32 works (the pooling is global). The last layer starts
    at zero, so an untrained step leaves the estimate unchanged.

    Input channels (``in_channels=9``): sRGB image in [0, 1], then the feedback of the current
    estimate (:data:`FEEDBACK_CHANNELS`: PNCC, normals).

    ``norm="group"`` (GroupNorm, default) behaves identically in training and inference and does
    not depend on the batch (iterative refinement of one photo, small per-GPU batches under DDP);
    ``"batch"`` (BatchNorm, as ResNet) trains faster on a tiny batch but needs SyncBatchNorm under
    DDP and batch statistics that match at inference.
    """

    def __init__(self, n_params: int, in_channels: int = 3 + FEEDBACK_CHANNELS,
                 widths: Sequence[int] = (32, 64, 128, 256), blocks: int = 2, hidden: int = 512,
                 norm: str = "group") -> None:
        super().__init__()
        if norm not in ("group", "batch"):
            raise ValueError(f"norm must be 'group' or 'batch', got {norm!r}")
        self.n_params = n_params
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False), _norm(norm, widths[0]),
                                   nn.ReLU(inplace=True)]
        c = widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks):
                layers.append(ResidualBlock(c, width, 2 if stage > 0 and i == 0 else 1, norm))
                c = width
        layers += [nn.Conv2d(c, c, 3, 1, 1, bias=False), _norm(norm, c), nn.ReLU(inplace=True),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_params))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def coarse_step(net: CoarseNet, image: Tensor, feedback: Tensor, params: Tensor) -> Tensor:
    """One refinement: ``params + net([image, feedback])``.

    image (B, 3, H, W) sRGB in [0, 1]; feedback (B, 6, H, W) rendered from ``params`` (PNCC, normals);
    params (B, N) normalized (:class:`~synthface.targets.ParameterNormalizer`). Returns the new (B, N) estimate.
    """
    return params + net(torch.cat([image, feedback], dim=1))
