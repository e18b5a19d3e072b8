"""Shared fixtures: small synthetic models built here, and the bundled model loaded once."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import trimesh

from synthface import load_model
from synthface.model import MorphableModel


def make_model(expression_kind: str = "pca", *, n_id: int = 6, n_exp: int = 5, n_alb: int = 3,
               radius: float = 80.0, seed: int = 0) -> MorphableModel:
    """An icosphere 'head' (mm) with smooth random bases; vertex 0 is the +z 'nose' tip."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    verts = np.asarray(sphere.vertices, dtype=np.float64)
    nose = int(np.argmax(verts[:, 2]))
    order = np.r_[nose, np.delete(np.arange(len(verts)), nose)]  # put the nose first
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    verts, faces = verts[order], remap[np.asarray(sphere.faces)]
    rng = np.random.default_rng(seed)
    v = len(verts)

    def smooth_basis(k: int, scale: float) -> np.ndarray:
        # Low-order polynomials of position: smooth fields, like a face model's components.
        feats = np.stack([verts[:, 0], verts[:, 1], verts[:, 2], verts[:, 0] * verts[:, 1] / radius], -1)
        return np.einsum("vf,kfc->kvc", feats / radius, rng.standard_normal((k, 4, 3))) * scale

    blend = expression_kind == "blendshape"
    return MorphableModel(
        name=f"test-sphere-{expression_kind}",
        mean_shape=verts.astype(np.float32),
        identity_basis=smooth_basis(n_id, 3.0).astype(np.float32),
        identity_std=np.full(n_id, 3.0, np.float32),
        expression_basis=smooth_basis(n_exp, 5.0 if blend else 2.0).astype(np.float32),
        expression_kind=expression_kind,  # type: ignore[arg-type]
        expression_names=tuple(f"{'bs' if blend else 'pc'}{i}" for i in range(n_exp)),
        triangles=faces.astype(np.int32),
        albedo_mean=np.full((v, 3), 0.5, np.float32),
        albedo_basis=smooth_basis(n_alb, 0.05).astype(np.float32),
        landmark_indices=np.arange(68, dtype=np.int64),
        sha256="0" * 64,
        source="test",
    )


@pytest.fixture(scope="session")
def sphere_model() -> MorphableModel:
    return make_model("pca")


@pytest.fixture(scope="session")
def blend_model() -> MorphableModel:
    return make_model("blendshape")


@pytest.fixture(scope="session")
def bundled_model() -> MorphableModel:
    return load_model()


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> str:
    """The blendshape test model saved in synthface's native format (for ``--model``)."""
    from synthface.model import save_native

    path = tmp_path_factory.mktemp("model") / "sphere.npz"
    save_native(make_model("blendshape"), path)
    return str(path)


@pytest.fixture(scope="session")
def gl_ctx():
    """The one GL context of the test session (Mesa llvmpipe here, through EGL)."""
    from synthface.gl import create_context

    ctx = create_context()
    yield ctx
    assert ctx.error == "GL_NO_ERROR"
    ctx.release()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors: one torch thread is about as fast, and immune to a busy machine (oversubscribed
    OpenMP threads made CoarseNet steps 10x slower next to a running benchmark)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mount_tmpfs(where, options: str) -> None:
    """Mount a tmpfs at ``where`` (root only; the test is skipped where that is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 400 KB tmpfs: the disk fills up for real, inside HDF5's and our own writes."""
    mount = tmp_path / "small"
    _mount_tmpfs(mount, "size=400k")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """An existing, empty directory on a read-only mount (``--out`` that cannot be written)."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "size=1m")
    (mount / "out").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount / "out"
    subprocess.run(["umount", "-l", str(mount)], check=False)
