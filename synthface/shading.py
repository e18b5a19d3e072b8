"""Spherical-harmonics Lambertian shading: pure batched functions (numpy or torch).

Lighting is 9 real SH coefficients per colour channel, in camera space, with
the Lambertian kernel folded into the basis and normalized so that
``light = [1, 0, …, 0]`` (per channel) shades every normal with 1, i.e. the
image equals the albedo. Coefficient order and basis functions ``H_k(n)``:

====  ==========  ================================
k     real SH     H_k(n), n = (x, y, z) unit
====  ==========  ================================
0     Y(0, 0)     1
1     Y(1, -1)    c1·y
2     Y(1, 0)     c1·z
3     Y(1, 1)     c1·x
4     Y(2, -2)    c2·x·y
5     Y(2, -1)    c2·y·z
6     Y(2, 0)     c3·(3z² − 1)
7     Y(2, 1)     c2·x·z
8     Y(2, 2)     (c2/2)·(x² − y²)
====  ==========  ================================

with ``H_k = (Â_l/π) · Y_k / Y_00`` (Ramamoorthi & Hanrahan 2001: Â_0 = π,
Â_1 = 2π/3, Â_2 = π/4), i.e. c1 = 2/√3, c2 = √15/4, c3 = √5/8.
Shading is ``albedo · Σ_k light[k] · H_k(n)``, clipped below at 0.

The sampler's lights are a fill (band 0) plus a key light from one direction (:func:`key_light`:
a clamped cosine as far as second order holds it, so the side of a face at 90° to the key gets the
fill and a twelfth of the key, as in a photo, not half of it as a first-order lobe gives).

The renderer adds two terms on top (format 2): the albedo is darkened by a per-vertex ambient
occlusion (:mod:`synthface.occlusion`), and a Blinn-Phong lobe (:func:`specular`) reflects the
key light — its direction and per-channel strength :func:`directional_light` reads back from the
first-order band. Cast shadows (format 4) take the key's :func:`key_falloff` share out.
"""

from __future__ import annotations

import math

import numpy as np

_Y00 = 0.5 / math.sqrt(math.pi)
C1 = (2.0 / 3.0) * (0.5 * math.sqrt(3.0 / math.pi)) / _Y00  # = 2/√3
C2 = 0.25 * (0.5 * math.sqrt(15.0 / math.pi)) / _Y00  # = √15/4
C3 = 0.25 * (0.25 * math.sqrt(5.0 / math.pi)) / _Y00  # = √5/8


def sh_basis(normals):
    """Unit normals (..., 3) → Lambertian SH basis values (..., 9) in the order documented above."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    xp = np if isinstance(normals, np.ndarray) else __import__("torch")
    terms = [
        xp.ones_like(x),
        C1 * y, C1 * z, C1 * x,
        C2 * x * y, C2 * y * z, C3 * (3.0 * z * z - 1.0), C2 * x * z, 0.5 * C2 * (x * x - y * y),
    ]
    return xp.stack(terms, -1)


def irradiance(normals, light):
    """Per-point RGB shading factor (B, ..., 3) from normals (B, ..., 3) and light (B, 9, 3)."""
    basis = sh_basis(normals)  # (B, ..., 9)
    b = basis.shape[0]
    flat = basis.reshape(b, -1, 9) @ light  # (B, P, 3)
    out = flat.reshape(*basis.shape[:-1], 3)
    return out.clip(0.0) if isinstance(out, np.ndarray) else out.clamp_min(0.0)


def shade(albedo, normals, light):
    """Linear-RGB colour (B, ..., 3) = albedo · irradiance(normals, light)."""
    return albedo * irradiance(normals, light)


def _norm(x, axis: int):
    return np.linalg.norm(x, axis=axis) if isinstance(x, np.ndarray) else x.norm(dim=axis)


def _unit(x):
    """x / |x| along the last axis; zero vectors stay zero."""
    n = _norm(x, -1)[..., None]
    return x / (n.clip(1e-12) if isinstance(n, np.ndarray) else n.clamp_min(1e-12))


KEY_TERMS = (0.25, 0.5, 5.0 / 32.0)
"""max(c, 0) ≈ K0 + K1·c + K2·(3c² − 1): a clamped cosine's Legendre terms up to l = 2 (all that
second-order SH hold), c the cosine of the angle to the light."""
KEY_PEAK = KEY_TERMS[0] + KEY_TERMS[1] + 2.0 * KEY_TERMS[2]
"""Those terms at c = 1 (1.0625): :func:`key_falloff` divides by it, so a key light is 1 facing it."""


def key_falloff(cos):
    """A key light's share of its full strength at ``cos`` (any shape) of the angle to it: the clamped
    cosine as second-order SH hold it — 1 facing the light, 0.09 at 90°, 0.06 behind, −0.04 at its
    dip near 115° (which the fill covers). The shader's shadows use the same function (face.frag)."""
    k0, k1, k2 = KEY_TERMS
    return (k0 + k1 * cos + k2 * (3.0 * cos * cos - 1.0)) / KEY_PEAK


def key_light(direction: np.ndarray) -> np.ndarray:
    """(B, 9) SH coefficients of a distant light from unit camera-space ``direction`` (B, 3) whose
    irradiance at normal n is :func:`key_falloff` (n·d); per channel, scale by the light's strength."""
    d = np.asarray(direction, np.float64)
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    k0, k1, k2 = (t / KEY_PEAK for t in KEY_TERMS)
    # 3(d·n)² − 1 = nᵀ(3ddᵀ − I)n, a traceless form: written in the basis's xy, yz, 3z²−1, xz, x²−y² terms
    return np.stack([np.full_like(x, k0), k1 * y / C1, k1 * z / C1, k1 * x / C1,
                     6.0 * k2 * x * y / C2, 6.0 * k2 * y * z / C2, k2 * (3.0 * z * z - 1.0) / (2.0 * C3),
                     6.0 * k2 * x * z / C2, 3.0 * k2 * (x * x - y * y) / C2], axis=1)


def directional_light(light):
    """(B, 9, 3) lighting → unit direction towards the key light (B, 3), camera space, and its strength (B, 3).

    The first-order band ``light[1:4]`` (y, z, x) of channel c is ``strength_c · K1/KEY_PEAK · d / c1``
    for a :func:`key_light` from direction d (strength: its irradiance facing it); the direction is that
    of the channels' sum.
    """
    band1 = C1 * light[:, [3, 1, 2], :]  # (B, xyz, channel)
    return _unit(band1.sum(-1)), _norm(band1, 1) * (KEY_PEAK / KEY_TERMS[1])


def specular(normals, points, light, material):
    """Blinn-Phong lobe, linear RGB (B, ..., 3), at unit normals (B, ..., 3) of camera-space points (B, ..., 3).

    ``material`` (B, 3) holds specular strength, shininess and occlusion (:data:`synthface.params.MATERIAL_FIELDS`);
    the lobe is ``strength_k · (n·h)^shininess · light strength`` where n·l > 0, with h halfway between the
    light's direction and the direction to the camera (at the origin). No light band 1, no highlight.
    """
    xp = np if isinstance(normals, np.ndarray) else __import__("torch")
    direction, strength = directional_light(light)
    extra = (1,) * (normals.dim() - 2 if xp is not np else normals.ndim - 2)
    d = direction.reshape(direction.shape[0], *extra, 3)
    half = _unit(d + _unit(-points))
    n_dot_h = (normals * half).sum(-1)
    n_dot_h = n_dot_h.clip(0.0) if xp is np else n_dot_h.clamp_min(0.0)
    shininess = material[:, 1].reshape(-1, *extra)
    lobe = xp.where((normals * d).sum(-1) > 0, n_dot_h ** shininess, 0.0 * n_dot_h)
    return (material[:, 0].reshape(-1, *extra) * lobe)[..., None] * strength.reshape(-1, *extra, 3)


def srgb_to_linear(srgb):
    """Inverse of :func:`linear_to_srgb`: sRGB in [0, 1] → linear RGB (numpy or torch, same shape).

    Shard images are sRGB uint8 (divide by 255 first); shading and the SfS loss work in linear RGB.
    """
    xp = np if isinstance(srgb, np.ndarray) else __import__("torch")
    s = srgb.clip(0.0, 1.0)
    return xp.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear):
    """IEC 61966-2-1 transfer function, for values in [0, 1] (numpy or torch)."""
    xp = np if isinstance(linear, np.ndarray) else __import__("torch")
    lin = linear.clip(0.0, 1.0)
    return xp.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1.0 / 2.4) - 0.055)
