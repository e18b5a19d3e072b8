"""The bundled CC0 model: API, units, scaling, orientation, landmarks; native format round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from synthface import load_model, vertex_normals
from synthface.errors import ModelFileError
from synthface.loaders import assets_dir, file_sha256, read_landmark_file
from synthface.model import SEGMENTATION_CLASSES, save_native


def test_api_shapes_and_index_bases(bundled_model):
    m = bundled_model
    assert m.source == "bundled"
    assert m.sha256 == file_sha256(assets_dir() / "synthface_default.npz")
    assert m.triangles.ndim == 2 and m.triangles.shape[1] == 3
    assert np.issubdtype(m.triangles.dtype, np.integer)
    assert m.triangles.min() == 0 and m.triangles.max() == m.n_vertices - 1
    assert len(np.unique(m.triangles)) == m.n_vertices  # every vertex is in some triangle
    assert m.landmark_indices.shape == (68,) and len(set(m.landmark_indices.tolist())) == 68
    assert 1000 < m.n_vertices < 60000 and m.n_identity >= 10 and m.n_albedo >= 4
    assert m.expression_kind == "blendshape" and m.n_expression == 52
    assert {"jawOpen", "eyeBlinkLeft", "mouthSmileRight"} <= set(m.expression_names)


def test_no_degenerate_triangles(bundled_model):
    m = bundled_model
    t = np.sort(m.triangles, axis=1)
    assert (t[:, 0] != t[:, 1]).all() and (t[:, 1] != t[:, 2]).all()
    assert len(np.unique(t, axis=0)) == len(t)


def test_millimetres_and_outward_normals(bundled_model):
    m = bundled_model
    bust = m.regions == SEGMENTATION_CLASSES.index("clothes")
    head = m.mean_shape[~bust]
    extent = head.max(axis=0) - head.min(axis=0)
    assert 100 < extent[0] < 250 and 120 < extent[1] < 300  # a head-sized head, in mm
    shoulders = m.mean_shape[bust, 0].max() - m.mean_shape[bust, 0].min()
    assert 300 < shoulders < 420 and m.mean_shape[bust, 1].max() < head[:, 1].min() + 60  # below the head
    normals = vertex_normals(m.mean_shape[None], m.triangles)[0]
    nose = m.mean_shape[m.landmark_indices[30]]
    assert normals[m.landmark_indices[30]][2] > 0.7  # the nose tip faces +z
    assert np.linalg.norm(m.mean_shape.mean(axis=0)[:2]) < 40  # the origin is near the head's centre axis
    # (Visible surfaces facing the camera is tested on renders: the closed mouth cavity and the eye
    # sockets behind the eyeballs are hidden interior surfaces whose normals point into them.)
    assert nose[2] == m.mean_shape[m.landmark_indices, 2].max()  # nose tip is the frontmost landmark


def test_bases_are_scaled_to_unit_coefficients(bundled_model):
    m = bundled_model
    head = m.regions != SEGMENTATION_CLASSES.index("clothes")  # the bust is regressed on the head's PCA
    flat = m.identity_basis[:, head].reshape(m.n_identity, -1).astype(np.float64)
    # PCA basis = orthonormal direction × std: norms are the stds and directions are orthogonal.
    np.testing.assert_allclose(np.linalg.norm(flat, axis=1), m.identity_std, rtol=2e-3)
    gram = (flat / np.linalg.norm(flat, axis=1, keepdims=True)) @ (flat / np.linalg.norm(flat, axis=1,
                                                                                         keepdims=True)).T
    np.testing.assert_allclose(gram, np.eye(m.n_identity), atol=5e-3)
    assert np.all(np.diff(m.identity_std) <= 1e-6)  # sorted by variance


def test_landmarks_are_anatomical(bundled_model):
    m = bundled_model
    lm = m.mean_shape[m.landmark_indices]
    x, y = lm[:, 0], lm[:, 1]
    assert x[36] < x[39] < 0 < x[42] < x[45]  # eye corners: subject's right eye at -x (image left)
    assert x[0] < x[8] < x[16] and y[8] < y[57] < y[51] < y[33] < y[27]  # chin < lips < nose < bridge
    assert min(y[17:27]) > max(y[36:48])  # brows above eyes
    assert y[66] < y[62] + 1e-6  # inner lower lip not above the inner upper lip


def test_jaw_open_opens_the_mouth(bundled_model):
    m = bundled_model
    expr = np.zeros((1, m.n_expression), np.float32)
    expr[0, m.expression_names.index("jawOpen")] = 1.0
    opened = m.shape(np.zeros((1, m.n_identity), np.float32), expr)[0][m.landmark_indices]
    neutral = m.mean_shape[m.landmark_indices]
    assert neutral[8, 1] - opened[8, 1] > 5  # chin drops by more than 5 mm
    assert (opened[66, 1] - opened[62, 1]) < (neutral[66, 1] - neutral[62, 1]) - 5  # lips part
    assert abs(opened[27, 1] - neutral[27, 1]) < 1  # the nose bridge stays


def test_albedo_is_plausible(bundled_model):
    m = bundled_model
    rng = np.random.default_rng(0)
    colours = m.albedo(np.clip(rng.standard_normal((64, m.n_albedo)), -2, 2).astype(np.float32))
    assert colours.min() >= 0 and colours.max() <= 1
    lm = m.landmark_indices
    lips, cheeks = m.albedo_mean[lm[48:60]], m.albedo_mean[lm[[2, 14]]]
    assert (lips[:, 0] / lips[:, 1]).mean() > (cheeks[:, 0] / cheeks[:, 1]).mean()  # lips redder
    assert colours.std(axis=0).mean() > 0.02  # coefficients change the colour


def test_torch_shape_matches_numpy(bundled_model):
    m = bundled_model
    rng = np.random.default_rng(1)
    ident = rng.standard_normal((3, m.n_identity)).astype(np.float32)
    expr = rng.uniform(0, 1, (3, m.n_expression)).astype(np.float32)
    ref = m.shape(ident, expr)
    got = m.shape(torch.as_tensor(ident), torch.as_tensor(expr))
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-2)


def test_native_round_trip(bundled_model, tmp_path):
    path = tmp_path / "m.npz"
    save_native(bundled_model, path, basis_dtype=np.float32)
    again = load_model(path)
    for f in dataclasses.fields(bundled_model):
        if f.name in ("sha256", "source", "_cache"):
            continue
        a, b = getattr(bundled_model, f.name), getattr(again, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f.name)
        else:
            assert a == b, f.name
    assert again.sha256 == file_sha256(path) and again.source == str(path)


def test_truncated_and_wrong_native_files_name_the_file(tmp_path):
    data = (assets_dir() / "synthface_default.npz").read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.npz.*(truncated|corrupt)"):
        load_model(cut)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mean=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"wrong\.npz: not a synthface model file \(missing format"):
        load_model(wrong)


def test_landmark_file_overrides(bundled_model, tmp_path):
    path = tmp_path / "lm.txt"
    path.write_text(" ".join(str(i) for i in range(68)))
    model = load_model(landmarks=path)
    np.testing.assert_array_equal(model.landmark_indices, np.arange(68))
    path.write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError, match="need 68"):
        read_landmark_file(path, bundled_model.n_vertices)


def test_iris_coordinates_centre_on_each_eye(bundled_model):
    """The bundled eyeballs carry iris coordinates: the pupil's centre (r = 0) lies between each eye's
    corners, in front of the eyeball, and the iris spans ~0.42 of the eye's width; other vertices are NaN."""
    m = bundled_model
    iris, v, lm = m.iris_coordinates, m.mean_shape, m.landmark_indices
    on = ~np.isnan(iris[:, 0])
    assert 40 <= on.sum() <= 400 and (m.regions[on] == SEGMENTATION_CLASSES.index("eyes")).all()
    r = np.linalg.norm(iris[on], axis=1)
    assert r.min() < 0.8 and r.max() > 3.0
    for a, b in ((36, 39), (42, 45)):
        corners = v[lm[[a, b]]]
        this = on & (np.abs(v[:, 0] - corners[:, 0].mean()) < 20)
        inner = this & (np.linalg.norm(iris, axis=1) < 1.0)  # NaN compares False
        centre = v[inner].mean(axis=0)
        assert corners[:, 0].min() < centre[0] < corners[:, 0].max()
        assert abs(centre[1] - corners[:, 1].mean()) < 4.0 and centre[2] > v[this, 2].mean()
        # the iris's radius in mm: the vertices at r ≈ 1.2 lie 1.2 iris radii (arc) from the pupil ring's axis
        width = np.linalg.norm(corners[0] - corners[1])
        ring = this & (np.abs(np.linalg.norm(iris, axis=1) - 1.2) < 0.15)
        spread = np.linalg.norm(v[ring, :2] - centre[:2], axis=1).mean() / 1.2
        assert 0.3 * width < 2 * spread < 0.55 * width


def test_iris_coordinates_are_validated(bundled_model):
    bad = bundled_model.iris_coordinates[:, :1].copy()
    with pytest.raises(ModelFileError, match="iris_coordinates must be"):
        dataclasses.replace(bundled_model, iris_coordinates=bad)
    with pytest.raises(ModelFileError, match="iris_coordinates must be"):
        dataclasses.replace(bundled_model, iris_coordinates=np.full((bundled_model.n_vertices, 2), np.nan, np.float32))
