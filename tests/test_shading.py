"""Shading: the SH basis against scipy's spherical harmonics, and known normals under known light."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import torch

from synthface.shading import directional_light, irradiance, key_falloff, key_light, linear_to_srgb, sh_basis, shade


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


def test_key_light_is_a_distant_lights_irradiance_up_to_second_order():
    """key_light(d) shades like a distant light from d as nine SH terms hold it (Ramamoorthi & Hanrahan:
    E(n) = Σ Â_l Y_lm(d) Y_lm(n), from scipy's harmonics), scaled to 1 facing it; directional_light reads
    the direction and strength back."""
    rng = np.random.default_rng(1)
    d = rng.standard_normal((4, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    n = rng.standard_normal((300, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    kernel = {0: math.pi, 1: 2.0 * math.pi / 3.0, 2: math.pi / 4.0}
    order = [(0, 0), (1, -1), (1, 0), (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)]
    for di in d:
        def e(points, di=di):
            return sum(kernel[deg] * _real_sh(deg, m, di[None]) * _real_sh(deg, m, points) for deg, m in order)
        want = e(n) / e(di[None])
        got = irradiance(n[None], np.repeat(key_light(di[None])[:, :, None], 3, axis=2))[0, :, 0]
        np.testing.assert_allclose(got, np.maximum(want, 0.0), atol=1e-10)
        np.testing.assert_allclose(key_falloff(n @ di), want, atol=1e-10)
    assert key_falloff(1.0) == pytest.approx(1.0) and 0.08 < key_falloff(0.0) < 0.1  # 90°: a twelfth
    strength = np.array([[0.5, 0.7, 0.9]] * 4)
    light = key_light(d)[:, :, None] * strength[:, None, :]
    light[:, 0] += 0.3  # a fill changes neither
    direction, got = directional_light(light)
    np.testing.assert_allclose(direction, d, atol=1e-12)
    np.testing.assert_allclose(got, strength, atol=1e-12)


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
