"""Backgrounds from a user's image folder (``--backgrounds DIR``) and the procedural noise texture."""

from __future__ import annotations

import json
import shutil

import h5py
import hdf5plugin  # noqa: F401  (Blosc filters)
import numpy as np
import pytest
from PIL import Image

from synthface import sample_params
from synthface.backgrounds import BackgroundImages, fractal_noise
from synthface.errors import ConfigError
from synthface.params import BACKGROUND, BACKGROUND_SOURCES
from synthface.render import FaceRenderer, RenderSettings
from synthface.resources import file_sha256

from .conftest import make_model
from .helpers import assert_user_error
from .helpers import cli as run
from .test_render import frontal_config, interior

COLOURS = {"red.png": (220, 30, 30), "green.jpg": (30, 200, 40), "sub/blue.png": (20, 40, 230)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three images, each one colour with a horizontal ramp; one in a sub-folder; a hidden file ignored."""
    root = tmp_path_factory.mktemp("backgrounds")
    for name, rgb in COLOURS.items():
        ramp = np.linspace(0.7, 1.0, 120)[None, :, None]
        pixels = np.round(np.broadcast_to(np.array(rgb) * ramp, (90, 120, 3))).astype(np.uint8)
        (root / name).parent.mkdir(exist_ok=True)
        Image.fromarray(pixels).save(root / name, quality=95)
    (root / ".DS_Store").write_bytes(b"not an image, but hidden")
    return root


def test_scan_lists_sorted_files_with_their_sha256(folder):
    images = BackgroundImages.scan(folder)
    assert [p.relative_to(folder).as_posix() for p in images.files] == ["green.jpg", "red.png", "sub/blue.png"]
    assert images.sha256 == tuple(file_sha256(p) for p in images.files)


def test_samples_record_file_crop_and_jitter_and_render_them(folder, gl_ctx):
    model = make_model("pca")
    cfg = frontal_config(**{"background.mode": "images", "background.directory": str(folder),
                            "background.blur": [0.0, 0.0], "background.jitter": 0.0})
    params = sample_params(model, seed=4, indices=range(12), config=cfg)
    bg = params["background"]
    images = BackgroundImages.scan(folder)
    assert (bg[:, BACKGROUND["source"]] == BACKGROUND_SOURCES.index("image")).all()
    picks = bg[:, BACKGROUND["image"]].astype(int)
    assert [s.decode() for s in params["background_sha256"]] == [images.sha256[k] for k in picks]
    assert len(set(picks)) == 3  # all three files get used
    assert (0.3 <= bg[:, BACKGROUND["crop_size"]]).all() and (bg[:, BACKGROUND["crop_size"]] <= 1).all()
    with FaceRenderer(model, RenderSettings(64, faces_per_draw=8), ctx=gl_ctx, backgrounds=images) as r:
        out = r.render(params)
    assert gl_ctx.error == "GL_NO_ERROR"
    names = [images.files[k].relative_to(folder).as_posix() for k in picks]
    for b, name in enumerate(names):
        shown = out.image[b][interior(out.mask[b] == 0)].astype(float).mean(axis=0)
        assert np.argmax(shown) == np.argmax(COLOURS[name]), (name, shown)  # the file's colour is behind the face
    # The renderer needs the folder to draw image backgrounds.
    with FaceRenderer(model, RenderSettings(64, faces_per_draw=8), ctx=gl_ctx) as r, \
            pytest.raises(ConfigError, match="no folder"):
        r.render(params)


def test_crops_follow_the_parameters(folder):
    images = BackgroundImages.scan(folder)
    row = np.zeros((2, len(BACKGROUND)), np.float32)
    row[:, BACKGROUND["crop_size"]] = 1.0
    row[:, [BACKGROUND["brightness"], BACKGROUND["contrast"], BACKGROUND["saturation"]]] = 1.0
    row[1, BACKGROUND["flip"]] = 1.0
    sha = np.array([images.sha256[1]] * 2, dtype="S64")  # red.png: brighter to the right
    plain, flipped = images.crops(row, sha, 32)
    assert plain[:, -1, 0].mean() > plain[:, 0, 0].mean() + 20
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    row[1, BACKGROUND["flip"]] = 0.0
    row[1, BACKGROUND["brightness"]] = 0.5
    _, darker = images.crops(row, sha, 32)
    assert abs(darker[..., 0].mean() / plain[..., 0].mean() - 0.5) < 0.05


def test_generate_with_backgrounds_and_a_bad_file(folder, model_file, tmp_path):
    out = tmp_path / "d"
    result = run("generate", "--model", model_file, "--n", "6", "--size", "32", "--shard-size", "3",
                 "--out", str(out), "--backgrounds", str(folder), "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["background"]["mode"] == "images"
    with h5py.File(out / "shard-000001.h5", "r") as f:
        shas = {s.decode() for s in f["params/background_sha256"][()]}
    assert shas <= set(BackgroundImages.scan(folder).sha256)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "fine.png").write_bytes((folder / "red.png").read_bytes())
    (broken / "notes.txt").write_text("not an image")
    result = run("generate", "--model", model_file, "--n", "2", "--size", "32", "--out", str(tmp_path / "e"),
                 "--backgrounds", str(broken), "--device", "cpu")
    assert_user_error(result, "notes.txt is not a readable image")
    assert not (tmp_path / "e").exists()  # refused before anything was written
    assert_user_error(run("generate", "--model", model_file, "--n", "2", "--out", str(tmp_path / "f"),
                          "--backgrounds", str(tmp_path / "missing")), "not a directory")


def test_resume_refuses_a_changed_background_folder(folder, model_file, tmp_path):
    """Which file sample i shows depends on the folder's sorted listing: the run records it (manifest
    ``backgrounds``), and --resume with a changed folder is one error line; restored, it finishes the same."""
    mine = tmp_path / "bg"
    shutil.copytree(folder, mine)
    out = tmp_path / "d"
    args = ("generate", "--model", model_file, "--n", "6", "--size", "32", "--shard-size", "3",
            "--out", str(out), "--backgrounds", str(mine), "--device", "cpu")
    assert run(*args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backgrounds"] == BackgroundImages.scan(mine).record()
    assert manifest["backgrounds"]["files"] == len(BackgroundImages.scan(mine))
    (out / "shard-000001.h5").unlink()
    extra = mine / "a-new-one.png"
    extra.write_bytes(sorted(mine.glob("*.png"))[0].read_bytes())
    assert_user_error(run(*args, "--resume"), "changed since the run started")
    extra.unlink()
    result = run(*args, "--resume")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text()) == manifest  # the same bytes as before


def test_fractal_noise_is_fixed_uniform_and_tileable():
    a, b = fractal_noise(64, 2), fractal_noise(64, 2)
    np.testing.assert_array_equal(a, b)
    hist = np.bincount(a[..., 0].ravel() // 32, minlength=8)
    assert hist.min() > 0.9 * hist.mean()  # rank-normalized: uniform over [0, 255]
    # Tileable: the jump across the wrap is no larger than a typical step inside.
    inside = np.abs(np.diff(a[..., 0].astype(int), axis=1)).mean()
    assert np.abs(a[:, 0, 0].astype(int) - a[:, -1, 0]).mean() < 2 * inside
