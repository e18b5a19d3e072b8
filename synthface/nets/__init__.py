"""Trainer networks (Richardson et al., CVPR 2017): CoarseNet, the rendering layer, FineNet."""

from .coarse import CoarseNet, coarse_step
from .fine import FineNet, normalize_depth
from .rendering_layer import (
    depth_to_normals,
    depth_to_points,
    sfs_loss,
    shade_depth,
    solve_lighting,
)

__all__ = [
    "CoarseNet",
    "FineNet",
    "coarse_step",
    "depth_to_normals",
    "depth_to_points",
    "normalize_depth",
    "sfs_loss",
    "shade_depth",
    "solve_lighting",
]
