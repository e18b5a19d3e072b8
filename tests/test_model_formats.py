"""Readers for the model files users bring (BFM2009 .mat, BFM2017/2019 .h5, Deep3DFaceRecon .mat).

Real BFM files cannot be redistributed, so each test writes a small file with
exactly their keys, layouts, dtypes, units and index bases (an icosphere of 162
vertices, so that winding is testable), loads it through ``load_model`` (format
detection included) and compares with the values the file was built from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import trimesh

from synthface import FORMATS, ModelFileError, load_model
from synthface.loaders import detect_format, file_sha256
from synthface.model_formats import _common

FILE_NAMES = {"bfm2009": "01_MorphableModel.mat", "bfm2017": "model2017-1_bfm_nomouth.h5",
              "deep3d": "BFM_model_front.mat"}
ALL = tuple(FILE_NAMES)


@dataclass(frozen=True)
class Truth:
    """A model in synthface units (mm, colour [0, 1], 0-based) that the writers convert to file layouts."""

    verts: np.ndarray  # (V, 3) mm, off-centre so re-centring shows
    faces: np.ndarray  # (F, 3) 0-based, counter-clockwise seen from outside
    u_id: np.ndarray  # (3V, K) orthonormal, interleaved xyz
    std_id: np.ndarray  # (K,) mm
    u_exp: np.ndarray
    std_exp: np.ndarray
    exp_mean: np.ndarray  # (V, 3) mm: the BFM2017 expression offset
    alb_mean: np.ndarray  # (V, 3) in [0, 1]
    u_alb: np.ndarray
    std_alb: np.ndarray
    landmarks: np.ndarray  # (68,) 0-based


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((rows, cols)))[0]


@pytest.fixture(scope="module")
def truth() -> Truth:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=80.0)
    verts = np.asarray(sphere.vertices) + np.array([5.0, -10.0, 20.0])
    faces = np.asarray(sphere.faces, dtype=np.int64)
    assert _volume(verts, faces) > 0  # trimesh winds outward: the reference orientation
    rng = np.random.default_rng(7)
    n3 = 3 * len(verts)
    return Truth(
        verts=verts, faces=faces,
        u_id=_orthonormal(rng, n3, 5), std_id=np.array([40.0, 30.0, 20.0, 15.0, 10.0]),
        u_exp=_orthonormal(rng, n3, 4), std_exp=np.array([12.0, 8.0, 5.0, 2.0]),
        exp_mean=np.array([0.0, -2.0, 3.0]) + rng.normal(0.0, 0.5, verts.shape),
        alb_mean=rng.uniform(0.3, 0.7, verts.shape),
        u_alb=_orthonormal(rng, n3, 3), std_alb=np.array([2.0, 1.0, 0.5]),
        # First and last vertex included, so an index-base slip is out of range, not silently shifted.
        landmarks=np.r_[0, len(verts) - 1, rng.choice(np.arange(1, len(verts) - 1), 66, replace=False)],
    )


def _volume(verts: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (verts[faces[:, i]] for i in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def _col(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1)


def _row(x: np.ndarray) -> np.ndarray:
    return x.reshape(1, -1)


def bfm2009_arrays(t: Truth) -> dict[str, np.ndarray]:
    """``01_MorphableModel.mat``: µm, (3V, 1) means, (K, 1) std, colour 0-255, float 1-based ``tl``."""
    f32 = np.float32
    return {
        "shapeMU": _col(t.verts * 1000).astype(f32), "shapePC": t.u_id.astype(f32),
        "shapeEV": _col(t.std_id * 1000).astype(f32),
        "texMU": _col(t.alb_mean * 255).astype(f32), "texPC": t.u_alb.astype(f32),
        "texEV": _col(t.std_alb * 255).astype(f32),
        "tl": (t.faces + 1).astype(np.float64), "segbin": np.ones((len(t.verts), 4), np.uint8),
    }


def bfm2017_arrays(t: Truth) -> dict[str, np.ndarray]:
    """statismo ``.h5``: mm, (3N,) means, orthonormal bases with variances, (3, T) 0-based cells."""
    f32 = np.float32
    out: dict[str, np.ndarray] = {
        "shape/model/mean": (t.verts - t.exp_mean).reshape(-1).astype(f32),
        "shape/representer/points": (t.verts - t.exp_mean).T.astype(f32),
        "shape/representer/cells": t.faces.T.astype(np.uint32),
        "expression/model/mean": t.exp_mean.reshape(-1).astype(f32),
        "color/model/mean": t.alb_mean.reshape(-1).astype(f32),
        "version/majorVersion": np.array(0), "version/minorVersion": np.array(9),
        "metadata/landmarks/json": np.array(b'[{"id": "center.nose.tip", "coordinates": [0, 0, 100]}]'),
    }
    for group, u, std in (("shape", t.u_id, t.std_id), ("expression", t.u_exp, t.std_exp),
                          ("color", t.u_alb, t.std_alb)):
        out |= {f"{group}/model/pcaBasis": u.astype(f32), f"{group}/model/pcaVariance": (std**2).astype(f32),
                f"{group}/model/noiseVariance": np.array(0.0, f32)}
    return out


def deep3d_arrays(t: Truth) -> dict[str, np.ndarray]:
    """``BFM_model_front.mat``: decimetres, std-scaled bases, (1, 3V) means, 1-based tri and keypoints."""
    v = len(t.verts)
    return {  # in the order Deep3DFaceRecon's transferBFM09 writes them
        "meanshape": _row(t.verts / 100).astype(np.float32),
        "meantex": _row(t.alb_mean * 255).astype(np.float32),
        "idBase": (t.u_id * t.std_id / 100).astype(np.float32),
        "exBase": (t.u_exp * t.std_exp / 100).astype(np.float32),
        "texBase": (t.u_alb * t.std_alb * 255).astype(np.float32),
        "tri": (t.faces + 1).astype(np.float64),
        "point_buf": np.ones((v, 8), np.int32), "tri_mask2": np.ones((10, 3), np.int32),
        "keypoints": _row(t.landmarks + 1).astype(np.float64),
        "frontmask2_idx": np.arange(1, 11, dtype=np.float64)[:, None], "skinmask": np.ones((1, v), np.int32),
    }


BUILDERS: dict[str, Callable[[Truth], dict[str, np.ndarray]]] = {
    "bfm2009": bfm2009_arrays, "bfm2017": bfm2017_arrays, "deep3d": deep3d_arrays}


def write(fmt: str, folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = folder / FILE_NAMES[fmt]
    if fmt == "bfm2017":
        with h5py.File(path, "w") as f:
            for key, value in arrays.items():
                f.create_dataset(key, data=value)
    else:
        scipy.io.savemat(path, arrays)
    return path


def expected(fmt: str, t: Truth) -> dict:
    """What every format must read back, in synthface's units."""
    mean = t.verts - t.verts.mean(axis=0) if fmt == "deep3d" else t.verts  # Deep3DFaceRecon re-centres
    has_exp = fmt != "bfm2009"
    return {
        "mean": mean, "id": t.u_id * t.std_id, "std": t.std_id,
        "exp": t.u_exp * t.std_exp if has_exp else np.zeros((3 * len(t.verts), 0)),
        "alb_mean": t.alb_mean, "alb": t.u_alb * t.std_alb,
        "landmarks": t.landmarks if fmt == "deep3d" else None,
    }


def _canonical(tris: np.ndarray) -> np.ndarray:
    """Each triangle rotated to start at its smallest index (winding kept), rows sorted."""
    first = np.argmin(tris, axis=1)[:, None]
    rotated = np.take_along_axis(tris, (first + np.arange(3)) % 3, axis=1)
    return rotated[np.lexsort(rotated.T[::-1])]


@pytest.mark.parametrize("fmt", ALL)
def test_reads_units_bases_and_indices(fmt: str, truth: Truth, tmp_path: Path) -> None:
    path = write(fmt, tmp_path, BUILDERS[fmt](truth))
    assert detect_format(path) == fmt
    model = load_model(path)
    want = expected(fmt, truth)
    assert model.source == str(path) and model.sha256 == file_sha256(path)
    assert model.metadata["format"] == fmt and model.metadata["triangles_flipped"] is False
    for arr in (model.mean_shape, model.identity_basis, model.expression_basis, model.albedo_mean,
                model.albedo_basis, model.identity_std):
        assert arr.dtype == np.float32
    np.testing.assert_allclose(model.mean_shape, want["mean"], atol=1e-3)  # mm, whatever the file's unit
    np.testing.assert_allclose(model.identity_std, want["std"], rtol=1e-5)
    # A known coefficient vector gives the known offset (checks std scaling, units and xyz interleaving).
    rng = np.random.default_rng(1)
    c_id = rng.standard_normal((2, model.n_identity))
    c_exp = rng.standard_normal((2, model.n_expression))
    offsets = c_id @ want["id"].T + c_exp @ want["exp"].T
    # Applied here rather than with model.shape(), which cannot reshape an empty (K=0) basis.
    shape = (model.mean_shape + np.einsum("bk,kvc->bvc", c_id, model.identity_basis)
             + np.einsum("bk,kvc->bvc", c_exp, model.expression_basis))
    np.testing.assert_allclose(shape, want["mean"] + offsets.reshape(2, -1, 3), atol=1e-3)
    c_alb = rng.standard_normal((2, model.n_albedo))
    alb = want["alb_mean"] + (c_alb @ want["alb"].T).reshape(2, -1, 3)
    assert 0.0 < alb.min() and alb.max() < 1.0  # inside the [0, 1] a renderer would clip to
    np.testing.assert_allclose(model.albedo_mean + np.einsum("bk,kvc->bvc", c_alb, model.albedo_basis), alb,
                               atol=1e-5)
    assert model.expression_kind == "pca"
    assert model.expression_names == tuple(f"pc{i}" for i in range(want["exp"].shape[1]))
    assert model.triangles.dtype == np.int32
    np.testing.assert_array_equal(model.triangles, truth.faces)  # 0-based, winding untouched
    if want["landmarks"] is None:
        assert model.landmark_indices is None
    else:
        np.testing.assert_array_equal(model.landmark_indices, want["landmarks"])


@pytest.mark.parametrize("fmt", ALL)
def test_inverted_winding_is_turned_outward(fmt: str, truth: Truth, tmp_path: Path) -> None:
    inverted = Truth(**{**truth.__dict__, "faces": truth.faces[:, ::-1]})
    model = load_model(write(fmt, tmp_path, BUILDERS[fmt](inverted)))
    assert model.metadata["triangles_flipped"] is True
    np.testing.assert_array_equal(_canonical(model.triangles), _canonical(truth.faces))
    volume = _volume(truth.verts, truth.faces)
    assert _volume(model.mean_shape, model.triangles) == pytest.approx(volume, rel=1e-3)


def test_orientation_of_an_open_face_mask(truth: Truth) -> None:
    """A face model is an open surface: the front half of the sphere must orient like the whole."""
    front = truth.faces[(truth.verts[truth.faces, 2] > 25.0).all(axis=1)]
    assert 0 < len(front) < len(truth.faces) // 2 + 20
    same, flipped = _common.orient_outward(truth.verts, front)
    assert not flipped and same is front
    fixed, flipped = _common.orient_outward(truth.verts, front[:, ::-1])
    assert flipped
    np.testing.assert_array_equal(_canonical(fixed), _canonical(front))


def test_bfm2017_without_colour_gets_grey(truth: Truth, tmp_path: Path) -> None:
    arrays = {k: v for k, v in bfm2017_arrays(truth).items() if not k.startswith("color/")}
    model = load_model(write("bfm2017", tmp_path, arrays))
    assert model.n_albedo == 0 and model.metadata["has_colour_model"] is False
    np.testing.assert_array_equal(model.albedo_mean, 0.5)
    assert model.n_identity == 5 and model.n_expression == 4


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "01_MorphableModel.mat"
    with pytest.raises(ModelFileError, match="not found") as err:
        load_model(path)
    assert str(err.value).startswith(str(path))


@pytest.mark.parametrize("via", ["load_model", "loader"])
@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.85])
@pytest.mark.parametrize("fmt", ALL)
def test_truncated_file(fmt: str, fraction: float, via: str, truth: Truth, tmp_path: Path) -> None:
    path = write(fmt, tmp_path, BUILDERS[fmt](truth))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError) as err:
        load_model(path) if via == "load_model" else FORMATS[fmt](path, sha256="")
    assert str(err.value).startswith(f"{path}: ")


def _drop(*keys: str) -> Callable[[dict, Truth], None]:
    def edit(arrays: dict, t: Truth) -> None:
        for key in keys:
            del arrays[key]
    return edit


def _set(key: str, value: Callable[[dict, Truth], object]) -> Callable[[dict, Truth], None]:
    def edit(arrays: dict, t: Truth) -> None:
        arrays[key] = value(arrays, t)
    return edit


def _group_instead(key: str) -> Callable[[dict, Truth], None]:
    def edit(arrays: dict, t: Truth) -> None:
        arrays[f"{key}/oops"] = arrays.pop(key)  # h5py makes `key` a group holding the dataset
    return edit


BAD_FILES = [
    ("bfm2009", _drop("shapeEV"), "missing key 'shapeEV'"),
    ("bfm2009", _drop("tl"), "missing key 'tl'"),
    ("bfm2009", _drop("texPC"), "missing key 'texPC'"),
    ("bfm2009", _set("shapePC", lambda a, t: a["shapePC"][:-3]),
     "'shapePC' has shape (483, 5), expected (486, 5)"),
    ("bfm2009", _set("shapeEV", lambda a, t: np.ones((6, 1))),
     "'shapePC' has shape (486, 5), expected (486, 6)"),
    ("bfm2009", _set("shapeEV", lambda a, t: -a["shapeEV"]), "negative"),
    ("bfm2009", _set("shapeMU", lambda a, t: a["shapeMU"][:-1]), "not a multiple of 3"),
    ("bfm2009", _set("shapeMU", lambda a, t: "not numbers"), "'shapeMU' is a dtype <U11"),
    ("bfm2009", _set("shapePC", lambda a, t: np.where(a["shapePC"] > 0.1, np.nan, a["shapePC"])), "NaN"),
    ("bfm2009", _set("texMU", lambda a, t: a["texMU"][:-3]), "'texMU' has shape (483,), expected (486,)"),
    ("bfm2009", _set("tl", lambda a, t: t.faces), "expected 1-based indices in [1, 162]"),  # 0-based
    ("bfm2009", _set("tl", lambda a, t: t.faces + 1.5), "non-integer"),
    ("bfm2009", _set("tl", lambda a, t: np.c_[t.faces, t.faces[:, :1]] + 1), "'tl' has shape (320, 4)"),
    ("bfm2017", _drop("shape/model/pcaVariance"), "missing key 'shape/model/pcaVariance'"),
    ("bfm2017", _drop("expression/model/mean"), "missing key 'expression/model/mean'"),
    ("bfm2017", _drop("shape/representer/cells"), "missing key 'shape/representer/cells'"),
    ("bfm2017", _drop("color/model/pcaBasis"), "missing key 'color/model/pcaBasis'"),
    ("bfm2017", _set("shape/representer/cells", lambda a, t: t.faces.astype(np.int32)),
     "'shape/representer/cells' has shape (320, 3), expected (3, any)"),
    ("bfm2017", _set("shape/representer/cells", lambda a, t: t.faces.T + 1), "indices in [1, 162]"),
    ("bfm2017", _set("expression/model/pcaBasis", lambda a, t: a["expression/model/pcaBasis"][:-3]),
     "'expression/model/pcaBasis' has shape (483, 4), expected (486, 4)"),
    ("bfm2017", _set("expression/model/mean", lambda a, t: a["expression/model/mean"][:-3]),
     "'expression/model/mean' has shape (483,), expected (486,)"),
    ("bfm2017", _set("color/model/pcaVariance", lambda a, t: np.ones(2)),
     "'color/model/pcaBasis' has shape (486, 3), expected (486, 2)"),
    ("bfm2017", _set("shape/model/pcaVariance", lambda a, t: -a["shape/model/pcaVariance"]), "negative"),
    ("bfm2017", _drop("shape/model/mean"), "missing key 'shape/model/mean'"),
    ("bfm2017", _group_instead("shape/model/mean"), "'shape/model/mean' is a Group, expected a dataset"),
    ("deep3d", _drop("keypoints"), "missing key 'keypoints'"),
    ("deep3d", _drop("exBase"), "missing key 'exBase'"),
    ("deep3d", _set("keypoints", lambda a, t: a["keypoints"][:, :67]),
     "'keypoints' has shape (67,), expected (68,)"),
    ("deep3d", _set("keypoints", lambda a, t: _row(t.landmarks)), "expected 1-based indices in [1, 162]"),
    ("deep3d", _set("idBase", lambda a, t: a["idBase"][:-3]),
     "'idBase' has shape (483, 5), expected (486, any)"),
    ("deep3d", _set("tri", lambda a, t: t.faces + 2), "'tri' has vertex indices in [2, 163]"),
    ("deep3d", _set("meantex", lambda a, t: a["meantex"][:, :-3]),
     "'meantex' has shape (483,), expected (486,)"),
]


@pytest.mark.parametrize(("fmt", "edit", "message"), BAD_FILES,
                         ids=[f"{f}-{m.split(',')[0][:40]}" for f, _, m in BAD_FILES])
def test_bad_file_names_file_and_problem(fmt: str, edit: Callable, message: str, truth: Truth,
                                         tmp_path: Path) -> None:
    arrays = BUILDERS[fmt](truth)
    edit(arrays, truth)
    path = write(fmt, tmp_path, arrays)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "is this" in text


@pytest.mark.parametrize(("written", "read_as", "missing"), [("bfm2009", "deep3d", "meanshape"),
                                                              ("deep3d", "bfm2009", "shapeMU")])
def test_wrong_format_forced(written: str, read_as: str, missing: str, truth: Truth, tmp_path: Path) -> None:
    path = write(written, tmp_path, BUILDERS[written](truth))
    with pytest.raises(ModelFileError, match=f"missing key '{missing}'"):
        load_model(path, format=read_as)
