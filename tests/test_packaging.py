"""The wheel carries the model and shaders; a fresh venv can import and run it from anywhere."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out), str(ROOT)], check=True)
    (path,) = out.glob("synthface-*.whl")
    return path


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in ("synthface/bfm_assets/synthface_default.npz", "synthface/bfm_assets/PROVENANCE.md",
                     "synthface/bfm_assets/LICENSE-CC0-1.0.txt", "synthface/bfm_assets/LICENSE-Apache-2.0.txt",
                     "synthface/render_shaders/README.md", "synthface/cli/__init__.py"):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "synthface = synthface.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_fresh_venv_imports_from_another_directory(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # Dependencies come from this test's environment (no network); synthface itself only from the wheel.
    (Path(site) / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import synthface, numpy as np; m = synthface.load_model(); "
            "p = synthface.sample_params(m, seed=0, indices=range(2)); "
            "v = synthface.camera_vertices(m, p); "
            "print(synthface.__file__, m.source, m.n_vertices, v.shape)")
    out = subprocess.run([py, "-c", code], cwd=elsewhere, check=True, capture_output=True, text=True).stdout
    path, source, n, *_ = out.split()
    assert path.startswith(str(venv)), path  # imported from the fresh venv, not the source tree
    assert source == "bundled" and int(n) > 1000
    version = subprocess.run([venv / "bin" / "synthface", "--version"], cwd=elsewhere, check=True,
                             capture_output=True, text=True).stdout
    assert version.strip() == "synthface, version 0.1.0"
