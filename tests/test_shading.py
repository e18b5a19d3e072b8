"""Shading: the SH basis against scipy's spherical harmonics, and known normals under known light."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

from synthface.shading import irradiance, linear_to_srgb, sh_basis, shade


def _real_sh(degree: int, m: int, n: np.ndarray) -> np.ndarray:
    """Real orthonormal SH from scipy's complex ones (Condon–Shortley phase removed)."""
    theta = np.arccos(np.clip(n[:, 2], -1, 1))  # polar from +z
    phi = np.arctan2(n[:, 1], n[:, 0])
    y = scipy.special.sph_harm_y(degree, abs(m), theta, phi)
    cs = (-1) ** abs(m)
    if m > 0:
        return math.sqrt(2) * cs * y.real
    if m < 0:
        return math.sqrt(2) * cs * y.imag
    return y.real


def test_basis_is_lambertian_scaled_real_sh():
    rng = np.random.default_rng(0)
    n = rng.standard_normal((200, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    y00 = 0.5 / math.sqrt(math.pi)
    kernel = {0: 1.0, 1: 2.0 / 3.0, 2: 0.25}  # Â_l / π
    order = [(0, 0), (1, -1), (1, 0), (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    ours = sh_basis(n)
    for k, (degree, m) in enumerate(order):
        want = kernel[degree] * _real_sh(degree, m, n) / y00
        np.testing.assert_allclose(ours[:, k], want, atol=1e-10, err_msg=str(k))


def test_unit_ambient_light_shows_the_albedo():
    normals = np.array([[[0, 0, -1.0], [1, 0, 0], [0, 1, 0]]])
    albedo = np.array([[[0.2, 0.4, 0.6], [0.5, 0.5, 0.5], [1, 0, 0]]])
    light = np.zeros((1, 9, 3))
    light[0, 0] = 1.0
    np.testing.assert_allclose(shade(albedo, normals, light), albedo)


def test_known_normal_under_known_light():
    n = np.array([[[0.0, 0.6, -0.8]]])  # facing the camera, tilted down
    light = np.zeros((1, 9, 3))
    light[0, 0] = [0.8, 0.9, 1.0]
    light[0, 2] = 0.3  # z lobe
    light[0, 6] = -0.1  # 3z² − 1 lobe
    c1, c3 = 2 / math.sqrt(3), math.sqrt(5) / 8
    want = np.array([0.8, 0.9, 1.0]) + 0.3 * c1 * -0.8 - 0.1 * c3 * (3 * 0.64 - 1)
    np.testing.assert_allclose(irradiance(n, light)[0, 0], want, atol=1e-12)
    t = irradiance(torch.as_tensor(n), torch.as_tensor(light))
    np.testing.assert_allclose(t.numpy()[0, 0], want, atol=1e-12)


def test_negative_irradiance_clips_to_zero():
    n = np.array([[[0.0, 0.0, 1.0]]])
    light = np.zeros((1, 9, 3))
    light[0, 2] = -5.0
    assert (irradiance(n, light) == 0).all()


def test_srgb_transfer():
    x = np.array([0.0, 0.002, 0.18, 1.0, 1.5])
    np.testing.assert_allclose(linear_to_srgb(x), [0, 12.92 * 0.002, 1.055 * 0.18 ** (1 / 2.4) - 0.055, 1, 1])


def test_srgb_round_trip():
    from synthface.shading import srgb_to_linear

    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(0.2140, abs=1e-4)  # the standard mid-grey
