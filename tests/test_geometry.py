"""Geometry: rotation convention and angle signs, batched vertices/normals, numpy ≡ torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from synthface import camera_vertices, project, sample_params, vertex_normals
from synthface.errors import DeviceError
from synthface.geometry import AXIS_FLIP, pose_to_camera, resolve_device, rotation_matrices, to_torch


def test_rotation_matches_scipy_extrinsic_xyz():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, (50, 3))  # yaw, pitch, roll
    ours = rotation_matrices(angles)
    # R = Rz(roll)·Ry(yaw)·Rx(pitch): extrinsic rotations about x, then y, then z.
    ref = Rotation.from_euler("xyz", angles[:, [1, 0, 2]]).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    t = rotation_matrices(torch.as_tensor(angles))
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-12)


def _nose_and_top(sphere_model, yaw=0.0, pitch=0.0, roll=0.0):
    """Image position of the +z 'nose' and the +y 'top of head' under a pose at 1 m."""
    pose = np.array([[yaw, pitch, roll, 0, 0, 1000.0]])
    pts = np.array([[[0, 0, 80.0], [0, 80.0, 0], [0, 0, 0]]])
    cam = (pts @ pose_to_camera(pose)[0].swapaxes(-1, -2) + pose[:, None, 3:])
    k = np.array([[[1000.0, 0, 50], [0, 1000.0, 50], [0, 0, 1]]])
    return project(cam, k)[0], cam[0]


def test_zero_pose_looks_into_the_camera_upright(sphere_model):
    uv, cam = _nose_and_top(sphere_model)
    np.testing.assert_allclose(pose_to_camera(np.zeros((1, 6)))[0][0], AXIS_FLIP)
    assert cam[0, 2] < cam[2, 2]  # the nose is nearer the camera than the head centre
    assert uv[1, 1] < uv[2, 1]  # the top of the head is higher in the image (smaller v)


@pytest.mark.parametrize(("kw", "check"), [
    ({"yaw": 0.5}, lambda uv: uv[0, 0] < uv[2, 0]),  # yaw > 0: nose to image left
    ({"yaw": -0.5}, lambda uv: uv[0, 0] > uv[2, 0]),
    ({"pitch": 0.5}, lambda uv: uv[0, 1] > uv[2, 1]),  # pitch > 0: nose down in the image
    ({"roll": 0.5}, lambda uv: uv[1, 0] > uv[2, 0]),  # roll > 0: clockwise, the top moves right
])
def test_documented_angle_signs(sphere_model, kw, check):
    uv, _ = _nose_and_top(sphere_model, **kw)
    assert check(uv)


def test_camera_vertices_numpy_and_torch_agree(sphere_model):
    params = sample_params(sphere_model, seed=0, indices=range(8))
    ref = camera_vertices(sphere_model, params)
    assert ref.shape == (8, sphere_model.n_vertices, 3) and ref.dtype == np.float32
    got = camera_vertices(sphere_model, to_torch(params))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-3)
    # The per-sample result does not depend on the batch it was computed in.
    one = camera_vertices(sphere_model, {k: v[3:4] for k, v in params.items()})
    np.testing.assert_allclose(one[0], ref[3], atol=1e-4)


def test_shape_is_mean_plus_scaled_bases(sphere_model):
    ident = np.zeros((1, sphere_model.n_identity), np.float32)
    ident[0, 2] = 1.5
    expr = np.zeros((1, sphere_model.n_expression), np.float32)
    expr[0, 1] = -2.0
    got = sphere_model.shape(ident, expr)[0]
    m = sphere_model
    want = m.mean_shape + 1.5 * m.identity_basis[2] - 2.0 * m.expression_basis[1]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_vertex_normals_are_area_weighted_and_torch_agrees(sphere_model):
    params = sample_params(sphere_model, seed=1, indices=range(4))
    verts = camera_vertices(sphere_model, params)
    normals = vertex_normals(verts, sphere_model.triangles)
    tri = sphere_model.triangles
    for b in range(4):
        mesh = trimesh.Trimesh(verts[b], tri, process=False)
        weighted = mesh.face_normals * mesh.area_faces[:, None]  # reference: unbuffered scatter-add
        ref = np.zeros_like(verts[b], dtype=np.float64)
        for k in range(3):
            np.add.at(ref, tri[:, k], weighted)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        np.testing.assert_allclose(normals[b], ref, atol=1e-4)
    t = vertex_normals(torch.as_tensor(verts), sphere_model.triangles)
    np.testing.assert_allclose(t.numpy(), normals, atol=1e-5)


def test_sphere_normals_point_outward(sphere_model):
    verts = sphere_model.mean_shape[None]
    normals = vertex_normals(verts, sphere_model.triangles)[0]
    radial = verts[0] / np.linalg.norm(verts[0], axis=1, keepdims=True)
    assert (normals * radial).sum(axis=1).min() > 0.99


def test_project_is_k_x_over_z():
    rng = np.random.default_rng(0)
    pts = rng.uniform([-50, -50, 300], [50, 50, 900], (2, 10, 3))
    k = np.array([[500.0, 0, 32], [0, 510.0, 30], [0, 0, 1]])[None].repeat(2, 0)
    uv = project(pts, k)
    np.testing.assert_allclose(uv[..., 0], 500 * pts[..., 0] / pts[..., 2] + 32)
    np.testing.assert_allclose(uv[..., 1], 510 * pts[..., 1] / pts[..., 2] + 30)


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


def test_models_without_expressions_or_albedo_components():
    from .conftest import make_model

    model = make_model("pca", n_exp=0, n_alb=0)  # e.g. BFM2009 has no expression basis
    params = sample_params(model, seed=0, indices=range(3))
    assert params["expression"].shape == (3, 0) and params["albedo"].shape == (3, 0)
    verts = camera_vertices(model, params)
    np.testing.assert_allclose(verts, camera_vertices(model, to_torch(params)).numpy(), atol=1e-3)
    mean = np.broadcast_to(model.albedo_mean, (3, *model.albedo_mean.shape))
    np.testing.assert_allclose(model.albedo(params["albedo"]), mean)


def test_camera_vertices_names_mismatched_shapes(sphere_model):
    params = sample_params(sphere_model, seed=0, indices=range(2))
    for key, bad in (("identity", np.zeros((2, sphere_model.n_identity + 1), np.float32)),
                     ("pose", np.zeros((3, 6), np.float32)), ("expression", np.zeros(sphere_model.n_expression))):
        with pytest.raises(ValueError, match=f"camera_vertices needs identity .* got .*{key}"):
            camera_vertices(sphere_model, {**params, key: bad})
