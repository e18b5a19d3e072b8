"""CoarseNet's supervised losses and the trainer's depth metric (FineNet's unsupervised loss is
:func:`synthface.nets.sfs_loss`, next to the rendering layer it shades with)."""

from __future__ import annotations

import torch

from .geometry import camera_vertices, project
from .model import MorphableModel
from .targets import ParameterNormalizer


def vertex_distance(model: MorphableModel, normalizer: ParameterNormalizer, estimate: torch.Tensor,
                    target: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance (mm) between the camera-space vertices of two normalized parameter
    vectors (B, N) with K (B, 3, 3), after moving the estimate along the optical axis by the mean
    z difference — as the depth error is measured (:mod:`synthface.evaluate`): a face's distance
    is seen only through its size, which identity also sets. Differentiable in ``estimate``."""
    return _vertex_distance(camera_vertices(model, normalizer.decode(estimate, intrinsics)),
                            camera_vertices(model, normalizer.decode(target, intrinsics)))


def _vertex_distance(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """:func:`vertex_distance` of (B, V, 3) camera-space vertices."""
    diff = est - ref
    diff = torch.cat([diff[..., :2], diff[..., 2:] - diff[..., 2:].mean(-2, keepdim=True)], -1)
    return (diff.square().sum(-1) + 1e-12).sqrt().mean()


def landmark_error(model: MorphableModel, normalizer: ParameterNormalizer, estimate: torch.Tensor,
                   intrinsics: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Mean distance between the estimate's projected ibug-68 landmarks and the shard's ``landmarks/xy``
    (B, 68, 2) over the ``visible`` (B, 68) ones, in units of the image side (so the weight does not
    depend on the image size). Why: a photo shows where a face's points are, not its parameters; this
    term asks for what the image shows. Differentiable in ``estimate``."""
    return _landmark_error(model, camera_vertices(model, normalizer.decode(estimate, intrinsics)), intrinsics,
                           landmarks, visible)


def _landmark_error(model: MorphableModel, vertices: torch.Tensor, intrinsics: torch.Tensor,
                    landmarks: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """:func:`landmark_error` of the estimate's (B, V, 3) camera-space vertices."""
    xy = project(vertices[:, list(model.landmark_indices)], intrinsics)
    side = 2.0 * intrinsics[:, 0, 2]  # the principal point is the image centre
    dist = ((xy - landmarks).square().sum(-1) + 1e-12).sqrt() / side[:, None]
    w = visible.to(dist.dtype)
    return (dist * w).sum() / w.sum().clamp_min(1.0)


def column_weights(normalizer: ParameterNormalizer, shape_weight: float) -> torch.Tensor:
    """(N,) weights of the parameter loss: ``shape_weight`` on identity and expression columns, 1 on pose."""
    w = torch.ones(normalizer.dim)
    for name in ("identity", "expression"):
        if name in normalizer.names:
            w[normalizer.slices[name]] = shape_weight
    return w


def coarse_loss(model: MorphableModel, normalizer: ParameterNormalizer, estimate: torch.Tensor,
                target: torch.Tensor, intrinsics: torch.Tensor, geometric_weight: float,
                weights: torch.Tensor | None = None, landmark_weight: float = 0.0,
                landmarks: tuple[torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mean(weights · (est − target)²) + geometric_weight · vertex_distance`` ``+ landmark_weight ·
    landmark_error`` (with ``landmarks`` = (xy, visible)); returns (loss, terms): ``mse`` (unweighted),
    ``vertex_mm`` and, with landmarks, ``landmark_side`` (:func:`landmark_error`, in image sides)."""
    sq = (estimate - target).square()
    mse = sq.mean()
    weighted = mse if weights is None else (sq * weights.to(sq.device, sq.dtype)).mean()
    est = camera_vertices(model, normalizer.decode(estimate, intrinsics))  # once, for both geometric terms
    vertex_mm = _vertex_distance(est, camera_vertices(model, normalizer.decode(target, intrinsics)))
    loss = weighted + geometric_weight * vertex_mm
    terms = {"mse": mse, "vertex_mm": vertex_mm}
    if landmarks is not None:
        terms["landmark_side"] = _landmark_error(model, est, intrinsics, *landmarks)
        loss = loss + landmark_weight * terms["landmark_side"]
    return loss, terms


def masked_depth_error(depth: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |depth − truth| (mm) over pixels on ``mask`` and on the true face (truth > 0)."""
    m = mask.to(depth.dtype) * (truth > 0).to(depth.dtype)
    return ((depth - truth).abs() * m).sum() / m.sum().clamp_min(1.0)
