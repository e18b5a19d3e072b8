"""CoarseNet's supervised losses and the trainer's depth metric (FineNet's unsupervised loss is
:func:`synthface.nets.sfs_loss`, next to the rendering layer it shades with)."""

from __future__ import annotations

import torch

from .geometry import camera_vertices
from .model import MorphableModel
from .targets import ParameterNormalizer


def vertex_distance(model: MorphableModel, normalizer: ParameterNormalizer, estimate: torch.Tensor,
                    target: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance (mm) between the camera-space vertices of two normalized parameter
    vectors (B, N) with K (B, 3, 3), after moving the estimate along the optical axis by the mean
    z difference — as the depth error is measured (:mod:`synthface.evaluate`): a face's distance
    is seen only through its size, which identity also sets. Differentiable in ``estimate``."""
    est = camera_vertices(model, normalizer.decode(estimate, intrinsics))
    ref = camera_vertices(model, normalizer.decode(target, intrinsics))
    diff = est - ref
    diff = torch.cat([diff[..., :2], diff[..., 2:] - diff[..., 2:].mean(-2, keepdim=True)], -1)
    return (diff.square().sum(-1) + 1e-12).sqrt().mean()


def column_weights(normalizer: ParameterNormalizer, shape_weight: float) -> torch.Tensor:
    """(N,) weights of the parameter loss: ``shape_weight`` on identity and expression columns, 1 on pose."""
    w = torch.ones(normalizer.dim)
    for name in ("identity", "expression"):
        if name in normalizer.names:
            w[normalizer.slices[name]] = shape_weight
    return w


def coarse_loss(model: MorphableModel, normalizer: ParameterNormalizer, estimate: torch.Tensor,
                target: torch.Tensor, intrinsics: torch.Tensor, geometric_weight: float,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``mean(weights · (est − target)²) + geometric_weight · vertex_distance``; returns (loss, mse, vertex mm),
    ``mse`` unweighted."""
    sq = (estimate - target).square()
    mse = sq.mean()
    weighted = mse if weights is None else (sq * weights.to(sq.device, sq.dtype)).mean()
    vertex_mm = vertex_distance(model, normalizer, estimate, target, intrinsics)
    return weighted + geometric_weight * vertex_mm, mse, vertex_mm


def masked_depth_error(depth: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |depth − truth| (mm) over pixels on ``mask`` and on the true face (truth > 0)."""
    m = mask.to(depth.dtype) * (truth > 0).to(depth.dtype)
    return ((depth - truth).abs() * m).sum() / m.sum().clamp_min(1.0)
