"""Trainer networks (Richardson et al., CVPR 2017): CoarseNet, the rendering layer, FineNet."""

from .coarse import CoarseNet, coarse_step, iterate_coarse, render_feedback
from .fine import FineNet, normalise_depth
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
    "iterate_coarse",
    "normalise_depth",
    "render_feedback",
    "sfs_loss",
    "shade_depth",
    "solve_lighting",
]
