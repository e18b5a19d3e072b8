"""The bad-input table: every row ends in one ``error:`` line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from .helpers import assert_user_error, cli


def _files(tmp_path) -> dict:
    """Inputs a user might get wrong, made fresh per test."""
    config_dir = tmp_path / "config.toml"
    config_dir.mkdir()
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[pose\\nyaw_deg = 3")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\\xff\\xfe\\x00garbage")
    truncated = tmp_path / "cut.mat"
    truncated.write_bytes(b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b"\\x00" * 90)
    wrong = tmp_path / "wrong.h5"
    import h5py

    with h5py.File(wrong, "w") as f:
        f["shape/model/mean"] = [0.0, 1.0, 2.0]
    return {"config_dir": config_dir, "bad_toml": bad_toml, "binary": binary, "truncated": truncated, "wrong": wrong}


ROWS = [
    (["--n", "0"], "Invalid value for '--n'"),
    (["--n", "-5"], "Invalid value for '--n'"),
    (["--size", "8"], "image_size: 8 is outside [16, 4096]"),
    (["--size", "100000"], "image_size: 100000 is outside [16, 4096]"),
    (["--shard-size", "0"], "Invalid value for '--shard-size'"),
    (["--workers", "0"], "Invalid value for '--workers'"),
    (["--device", "tpu"], "Invalid value for '--device'"),
    (["--faces-per-draw", "0"], "Invalid value for '--faces-per-draw'"),
    (["--config", "{config_dir}"], "is a directory"),
    (["--config", "{bad_toml}"], "is not valid TOML"),
    (["--config", "{binary}"], "is not valid TOML"),
    (["--set", "pose.yaw_deg=[50, -50]"], "min > max"),
    (["--set", "camera.lens=35"], "unknown config key camera.lens"),
    (["--model", "{truncated}"], "cut.mat"),
    (["--model", "{wrong}"], "wrong.h5"),
    (["--model", "/nonexistent/model.h5"], "model file not found"),
    (["--landmarks", "{bad_toml}"], "landmark file must hold 68 integers"),
]


@pytest.mark.parametrize(("args", "fragment"), ROWS)
def test_generate_bad_input(args, fragment, tmp_path):
    files = _files(tmp_path)
    out = tmp_path / "out"
    args = [a.format(**files) for a in args]
    assert_user_error(cli("generate", "--n", "4", "--out", str(out), "--size", "32", *args)
                      if "--n" not in args else cli("generate", "--out", str(out), *args), fragment)
    assert not out.exists(), "nothing may be written for a refused run"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda(tmp_path):
    out = tmp_path / "out"
    assert_user_error(cli("generate", "--n", "4", "--out", str(out), "--size", "32", "--device", "cuda"),
                      "no CUDA device is available")
    assert not out.exists()


def test_generate_without_usable_egl(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES=str(tmp_path / "missing_vendor.json"))
    proc = subprocess.run([sys.executable, "-m", "synthface", "generate", "--n", "4", "--out", str(out), "--size",
                           "32"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no usable OpenGL") and "libegl1 libgl1-mesa-dri" in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert not out.exists(), "GL is checked before anything is written"
