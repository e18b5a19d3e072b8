"""Differentiable rendering layer: depth map → points → normals → SH shading, and the SfS loss.

Pure batched torch functions for FineNet's unsupervised loss (Richardson et al., CVPR 2017).
Conventions are those of the shards (README): depth is camera z in mm at pixel centres
(0 = background); pixel (u, v) is sampled at ``(u + 0.5, v + 0.5)`` in the coordinates of K,
whose origin is the top-left pixel's top-left corner; camera axes are OpenCV's (x right,
y down, z forward), so a surface seen from the front has a normal with negative z, exactly
like the renderer's normals. Shading reuses :mod:`synthface.shading` (lighting (B, 9, 3),
camera space, Lambertian kernel folded in).

Masks are (B, 1, H, W) (or (B, H, W)), bool or {0, 1}; images are (B, 3, H, W) linear RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..params import N_SH
from ..shading import sh_basis, shade, specular
from ..train_config import DEFAULT_SFS_WEIGHTS

__all__ = [
    "DEFAULT_SFS_WEIGHTS",
    "albedo_flat",
    "depth_to_normals",
    "depth_to_points",
    "erode",
    "laplacian",
    "laplacian_mask",
    "masked_mean",
    "normal_mask",
    "sfs_loss",
    "shade_depth",
    "solve_lighting",
    "unsaturated",
]


def _mask4(mask: Tensor | None, like: Tensor) -> Tensor:
    """Mask as (B, 1, H, W) in ``like``'s dtype; None → every pixel with positive depth."""
    if mask is None:
        return (like > 0).to(like.dtype)
    if mask.dim() == 3:
        mask = mask[:, None]
    return mask.to(like.dtype)


def _float_mask(mask: Tensor) -> Tensor:
    """Mask as (B, 1, H, W), keeping a floating dtype (else the default float dtype)."""
    m = mask[:, None] if mask.dim() == 3 else mask
    return m if m.is_floating_point() else m.to(torch.get_default_dtype())


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (B, C, H, W) over the pixels where ``mask`` (B, 1, H, W) is 1, all channels and
    the whole batch together; 0 if the mask is empty."""
    m = mask.expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def depth_to_points(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """Back-project a depth map: (B, 1, H, W) z in mm, K (B, 3, 3) → camera points (B, 3, H, W) in mm.

    ``X = z · K⁻¹ · (u + 0.5, v + 0.5, 1)``: pixel centres in K's top-left-corner coordinates.
    Points inherit depth's dtype/device (K is cast); background (z = 0) maps to the origin.
    """
    b, _, h, w = depth.shape
    k_inv = torch.linalg.inv(intrinsics.to(depth.dtype))
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype, device=depth.device) + 0.5,
                          torch.arange(w, dtype=depth.dtype, device=depth.device) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)]).reshape(3, h * w)  # (3, HW)
    rays = (k_inv @ pix).reshape(b, 3, h, w)
    return rays * depth


def _neighbours(x: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """(previous, next) neighbours of every pixel along ``axis`` (-1: columns, -2: rows), zero-padded."""
    pad = (1, 1, 0, 0) if axis == -1 else (0, 0, 1, 1)
    p = F.pad(x, pad)
    n = x.shape[axis]
    return p.narrow(axis, 0, n), p.narrow(axis, 2, n)


def _tangent(points: Tensor, mask: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """Derivative of the points along ``axis`` per pixel, and (B, 1, H, W) whether it exists.

    Central difference where both neighbours are on the mask, one-sided where only one is,
    zero where neither is (image borders count as off the mask). Weights depend on the mask only,
    so the result is linear in depth and differentiable.
    """
    prev_p, next_p = _neighbours(points, axis)
    prev_m, next_m = _neighbours(mask, axis)
    prev_m, next_m = prev_m * mask, next_m * mask
    count = prev_m + next_m
    diff = (next_m * (next_p - points) + prev_m * (points - prev_p)) / count.clamp_min(1.0)
    return diff, (count > 0).to(mask.dtype)


def normal_mask(mask: Tensor) -> Tensor:
    """(B, 1, H, W) float: pixels of ``mask`` with a mask neighbour both horizontally and vertically,
    i.e. where :func:`depth_to_normals` defines a normal (isolated pixels and 1-pixel strips get none)."""
    m = _float_mask(mask)
    out = m
    for axis in (-1, -2):
        prev_m, next_m = _neighbours(m, axis)
        out = out * (prev_m + next_m > 0).to(m.dtype)
    return out


def depth_to_normals(depth: Tensor, intrinsics: Tensor, mask: Tensor | None = None) -> Tensor:
    """Unit camera-space normals (B, 3, H, W) of a depth map (B, 1, H, W) mm with K (B, 3, 3).

    ``n ∝ −(∂X/∂u × ∂X/∂v)`` from central differences of the back-projected points, so normals
    face the camera (negative z for a surface seen from the front, as the renderer's do). Across
    the mask border differences are one-sided (a pixel never differences against the background);
    pixels outside :func:`normal_mask` get a zero normal. ``mask`` None means ``depth > 0``.
    Differentiable with respect to depth (the mask is treated as a constant).
    """
    m = _mask4(mask, depth)
    points = depth_to_points(depth, intrinsics)
    du, ok_u = _tangent(points, m, -1)
    dv, ok_v = _tangent(points, m, -2)
    normal = torch.linalg.cross(dv, du, dim=1)  # = −(du × dv)
    return F.normalize(normal, dim=1, eps=1e-12) * (ok_u * ok_v)


def _basis_image(normals: Tensor) -> Tensor:
    """SH basis of (B, 3, H, W) normals as (B, H·W, 9)."""
    b = normals.shape[0]
    return sh_basis(normals.permute(0, 2, 3, 1)).reshape(b, -1, N_SH)


def solve_lighting(image_linear: Tensor, normals: Tensor, albedo: Tensor, mask: Tensor,
                   *, ridge: float = 1e-6) -> Tensor:
    """SH lighting (B, 9, 3) that best explains a linear image (B, 3, H, W) as ``albedo · ⟨l, H(n)⟩``.

    Masked linear least squares per image and per colour channel (one 9 × 9 system each, all
    solved in one batched call) with unit normals (B, 3, H, W) and albedo (B, 3, H, W) or
    (B, 3, 1, 1), over ``mask`` (B, 1, H, W) (combine it with :func:`normal_mask` yourself if
    the normals come from a depth map). The clamp at zero in :func:`synthface.shading.irradiance`
    is ignored (the model is linear in l). Normal equations with a ridge of ``ridge`` × the
    system's mean diagonal (+1e-12): negligible when the mask has many pixels with spread-out
    normals; with fewer than 9 independent pixels the unconstrained directions shrink to 0, and
    an empty mask gives l = 0 (never NaN). Differentiable (through ``torch.linalg.solve``).
    """
    b = image_linear.shape[0]
    m = _mask4(mask, image_linear).reshape(b, 1, -1, 1)  # (B, 1, P, 1)
    basis = _basis_image(normals)[:, None]  # (B, 1, P, 9)
    rho = albedo.expand_as(image_linear).reshape(b, 3, -1, 1)  # (B, 3, P, 1)
    target = image_linear.reshape(b, 3, -1, 1)
    design = rho * basis  # (B, 3, P, 9)
    weighted = design * m
    gram = weighted.transpose(-1, -2) @ design  # (B, 3, 9, 9)
    rhs = weighted.transpose(-1, -2) @ target  # (B, 3, 9, 1)
    eye = torch.eye(N_SH, dtype=gram.dtype, device=gram.device)
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1)[..., None, None]
    light = torch.linalg.solve(gram + (ridge * scale + 1e-12) * eye, rhs)  # (B, 3, 9, 1)
    return light[..., 0].transpose(1, 2)


def shade_depth(depth: Tensor, intrinsics: Tensor, albedo: Tensor, light: Tensor,
                mask: Tensor | None = None) -> Tensor:
    """Linear image (B, 3, H, W) of a depth map (B, 1, H, W) mm under SH ``light`` (B, 9, 3).

    ``albedo (B, 3, H, W) or (B, 3, 1, 1) · max(0, Σ_k light_k · H_k(n(depth)))`` with normals from
    :func:`depth_to_normals`; zero outside :func:`normal_mask` of ``mask`` (None: ``depth > 0``).
    Differentiable with respect to depth, albedo and light.
    """
    m = _mask4(mask, depth)
    normals = depth_to_normals(depth, intrinsics, m)
    colour = shade(albedo.permute(0, 2, 3, 1), normals.permute(0, 2, 3, 1), light.to(depth.dtype))
    return colour.permute(0, 3, 1, 2) * normal_mask(m)


SATURATION: float = 0.99
"""Linear intensity at or above which a pixel counts as clipped by the camera (sRGB 254/255 is
0.991): its true shading is only known to be at least this bright, so the SfS loss leaves it out."""


def unsaturated(image_linear: Tensor) -> Tensor:
    """(B, 1, H, W) float: 1 where no channel of the linear image (B, 3, H, W) reaches :data:`SATURATION`."""
    return (image_linear.amax(1, keepdim=True) < SATURATION).to(image_linear.dtype)


def erode(mask: Tensor, pixels: int) -> Tensor:
    """(B, 1, H, W) float: pixels of ``mask`` at least ``pixels`` (Chebyshev distance) from any pixel
    off it; pixels beyond the image border count as on the mask. ``pixels`` 0 returns the mask."""
    m = _float_mask(mask)
    if pixels <= 0:
        return m
    return -F.max_pool2d(-m, 2 * pixels + 1, 1, pixels)


def albedo_flat(albedo: Tensor, mask: Tensor, radius: int, tolerance: float) -> Tensor:
    """(B, 1, H, W) float: mask pixels whose albedo is nearly constant within ``radius`` pixels.

    Why: the SfS loss's albedo (e.g. the mean albedo rendered at the coarse estimate) is drawn where
    the *coarse* face puts lips, brows and eyes, a few pixels off where the image has them; at such
    an edge the residual is an albedo error the loss would explain by bending the surface. A pixel
    counts as flat when the mean-over-RGB albedo on the mask within a (2·radius + 1)² window varies
    by at most ``tolerance`` times its own value. A constant albedo (B, 3, 1, 1) is flat everywhere.
    """
    m = _float_mask(mask)
    if albedo.shape[-2:] != m.shape[-2:]:
        return m
    lum = albedo.mean(1, keepdim=True).to(m.dtype)
    size = 2 * radius + 1
    big = lum.abs().amax() + 1.0  # off the mask: neutral in both the max and the min
    hi = F.max_pool2d(torch.where(m > 0, lum, -big), size, 1, radius)
    lo = -F.max_pool2d(torch.where(m > 0, -lum, -big), size, 1, radius)
    return m * ((hi - lo) <= tolerance * lum.clamp_min(1e-6)).to(m.dtype)


_LAPLACE = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def laplacian_mask(mask: Tensor) -> Tensor:
    """(B, 1, H, W) float: pixels whose four neighbours and themselves are on ``mask`` (and in the image)."""
    m = _float_mask(mask)
    cross = torch.tensor(_LAPLACE, dtype=m.dtype, device=m.device).abs().reshape(1, 1, 3, 3)
    return (F.conv2d(m, cross, padding=1) > 4.5).to(m.dtype)


def laplacian(depth: Tensor, mask: Tensor | None = None) -> Tensor:
    """4-neighbour discrete Laplacian (B, 1, H, W) of depth (B, 1, H, W), in mm per pixel².

    Zero outside :func:`laplacian_mask`: the silhouette's depth jump is not surface curvature.
    """
    kernel = torch.tensor(_LAPLACE, dtype=depth.dtype, device=depth.device).reshape(1, 1, 3, 3)
    return F.conv2d(depth, kernel, padding=1) * laplacian_mask(_mask4(mask, depth))


def sfs_loss(depth_hat: Tensor, depth_coarse: Tensor, image_linear: Tensor, intrinsics: Tensor,
             mask: Tensor, albedo: Tensor, weights: tuple[float, float, float] = DEFAULT_SFS_WEIGHTS,
             *, light: Tensor | None = None, material: Tensor | None = None, margin: int = 0,
             albedo_tolerance: float | None = None, albedo_radius: int = 2,
             shown: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """FineNet's unsupervised shape-from-shading loss (CVPR 2017, eq. 5); scalar total and its terms.

    ``λ_sh·mean‖ρ⟨l, H(n(ẑ))⟩ − I‖² + λ_f·mean(ẑ − z_coarse)² + λ_sm·mean|Δẑ|``, each a masked mean
    over the batch (shading: over :func:`normal_mask` pixels and RGB; Laplacian: over pixels whose
    four neighbours are on the mask; pixels the camera clipped, see :func:`unsaturated`, take part in
    neither the shading term nor the lighting solve). Depths (B, 1, H, W) mm, image (B, 3, H, W) linear RGB,
    albedo ρ (B, 3, H, W) or (B, 3, 1, 1) (e.g. the model's mean albedo), mask (B, 1, H, W).

    Lighting: ``light`` (B, 9, 3) if given (e.g. the shard's ``params/light``), else solved by
    :func:`solve_lighting` from the current normals n(ẑ) and the image, then **detached**. For
    the least-squares optimum l*(ẑ) the partial derivative ∂E/∂l vanishes, so the gradient of
    E(ẑ, l*(ẑ)) equals that with l held fixed (envelope theorem; exact up to the shading clamp):
    detaching costs nothing in correctness and avoids back-propagating through the batched solve,
    whose gradient is noisy when the mask is small and normals poorly spread.

    ``material`` (B, 3) (the shard's ``params/material``; needs ``light``) adds the renderer's
    Blinn-Phong lobe (:func:`synthface.shading.specular`) at the points and normals of ẑ, so images
    with highlights are explained by the same model that drew them; the ambient occlusion is a
    factor of the albedo, so pass ρ drawn with it (:func:`synthface.feedback.render_mean_albedo` with
    the material in the parameters).

    Where the image is not trusted to show shading of this albedo, the shading term and the
    lighting solve leave pixels out (fidelity and smoothness still hold the depth there):
    ``margin`` > 0 drops pixels closer than that to the mask's border (:func:`erode`: near the
    coarse silhouette the image may show background or the face's far side), and
    ``albedo_tolerance`` drops pixels near an albedo edge (:func:`albedo_flat` with
    ``albedo_radius``: the albedo map is placed by the coarse estimate, so its lips and brows are off),
    and ``shown`` (B, 1, H, W), where given, keeps only pixels known to show the face's skin (a shard's
    ``mask``: not hair, an occluder or the background over the coarse face).

    Returns ``(total, {"shading", "fidelity", "smoothness"})`` with the unweighted terms.
    """
    lam_sh, lam_f, lam_sm = weights
    m = _mask4(mask, depth_hat)
    valid = normal_mask(m) * unsaturated(image_linear) * erode(m, margin)
    if shown is not None:
        valid = valid * _mask4(shown, depth_hat)
    if albedo_tolerance is not None:
        valid = valid * albedo_flat(albedo, m, albedo_radius, albedo_tolerance)
    normals = depth_to_normals(depth_hat, intrinsics, m)
    if light is None:
        with torch.no_grad():
            light = solve_lighting(image_linear, normals, albedo, valid)
    colour = shade(albedo.permute(0, 2, 3, 1), normals.permute(0, 2, 3, 1), light.to(depth_hat.dtype))
    if material is not None:
        points = depth_to_points(depth_hat, intrinsics).permute(0, 2, 3, 1)
        colour = colour + specular(normals.permute(0, 2, 3, 1), points, light.to(depth_hat.dtype),
                                   material.to(depth_hat.dtype))
    shading = masked_mean((colour.permute(0, 3, 1, 2) - image_linear) ** 2, valid)
    fidelity = masked_mean((depth_hat - depth_coarse) ** 2, m)
    lap = laplacian(depth_hat, m)
    smoothness = masked_mean(lap.abs(), laplacian_mask(m))
    total = lam_sh * shading + lam_f * fidelity + lam_sm * smoothness
    return total, {"shading": shading, "fidelity": fidelity, "smoothness": smoothness}
