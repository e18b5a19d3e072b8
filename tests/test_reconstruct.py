"""Reconstruction of real photographs: face detection, crop and K, outputs, and ``synthface reconstruct``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from synthface.errors import ReconstructError
from synthface.feedback import feedback_settings
from synthface.photo import crop_square, detect_face, photo_focal, read_image
from synthface.predict import Predictor, load_checkpoint
from synthface.reconstruct import DEPTH_SCALE, read_depth_png, reconstruct, write_outputs
from synthface.render import FaceRenderer
from synthface.targets import PARAM_VECTOR, ParameterNormalizer

from .helpers import assert_user_error, cli, header_bomb
from .test_evaluate import checkpoint_dict

skimage_data = pytest.importorskip("skimage.data")
SIZE = 64
DISTANCE_MM = 800.0  # the untrained nets predict the normalizer's mean: a face this far away fills ~ 3/4 of the crop


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory):
    """skimage's public-domain astronaut photo (512 × 512, one frontal face), also as a JPEG file."""
    image = skimage_data.astronaut()
    path = tmp_path_factory.mktemp("photos") / "astronaut.jpg"
    Image.fromarray(image).save(path, quality=92)
    return image, path


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory, bundled_model, astronaut):
    """A checkpoint of untrained nets for the bundled model, at 64 px, whose mean pose faces the camera
    at DISTANCE_MM from the astronaut crop's virtual camera (the pose code's last column is log(tz / fx))."""
    m = bundled_model
    sizes = (m.n_identity, m.n_expression, 6)
    mean = np.zeros(sum(sizes), np.float32)
    _, k = crop_square(astronaut[0], detect_face(astronaut[0]), SIZE)
    mean[-1] = math.log(DISTANCE_MM / k[0, 0])
    normalizer = ParameterNormalizer(PARAM_VECTOR, sizes, mean, np.ones(sum(sizes), np.float32))
    path = tmp_path_factory.mktemp("ckpt") / "bundled.pt"
    torch.save({**checkpoint_dict(normalizer, m), "image_size": SIZE}, path)
    return path


def test_detector_finds_the_astronauts_face(astronaut):
    image, path = astronaut
    np.testing.assert_array_equal(read_image(path).shape, image.shape)
    x, y, w, h = detect_face(image)
    assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]
    assert 50 <= w <= 250 and 0.8 <= h / w <= 1.25
    # her face is in the upper half, left of centre
    assert y + h / 2 < image.shape[0] / 2 and x + w / 2 < image.shape[1] / 2
    with pytest.raises(ReconstructError, match="no face found"):
        detect_face(np.full((200, 200, 3), 128, np.uint8))


def test_crop_is_square_with_a_scaled_focal_length(astronaut):
    image, _ = astronaut
    f = photo_focal(image.shape, 50.0)
    assert f == pytest.approx(256 / math.tan(math.radians(25)))
    crop, k = crop_square(image, (100, 100, 50, 50), 40, margin=0.5)  # 100 px square → 40 px
    assert crop.shape == (40, 40, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(k, [[f * 0.4, 0, 20], [0, f * 0.4, 20], [0, 0, 1]], rtol=1e-6)
    # a box at the corner: the square leaves the photo and is padded, not shrunk
    crop, k = crop_square(image, (0, 0, 60, 60), 32)
    assert crop.shape == (32, 32, 3)


def test_reconstruct_writes_mesh_depth_and_overlay(astronaut, ckpt_file, bundled_model, gl_ctx, tmp_path):
    image, _ = astronaut
    renderer = FaceRenderer(bundled_model, feedback_settings(SIZE, 1), ctx=gl_ctx)
    try:
        with Predictor(load_checkpoint(ckpt_file), bundled_model, renderer=renderer) as predictor:
            rec = reconstruct(image, predictor)
    finally:
        renderer.release()
    assert rec.crop.shape == rec.overlay.shape == (SIZE, SIZE, 3)
    assert rec.depth.shape == rec.mask.shape == (SIZE, SIZE)
    assert 0.2 < rec.mask.mean() < 0.9  # the face fills a good part of the crop
    z = rec.depth[rec.mask]
    assert (z > DISTANCE_MM - 200).all() and (z < DISTANCE_MM + 200).all() and (rec.depth[~rec.mask] == 0).all()
    assert not np.array_equal(rec.overlay, rec.crop)
    np.testing.assert_array_equal(rec.overlay[~rec.mask], rec.crop[~rec.mask])
    for fmt in ("obj", "ply"):
        written = write_outputs(rec, tmp_path, "astro", mesh_format=fmt)
        assert [p.name for p in written] == [f"astro.{fmt}", "astro_depth.png", "astro_overlay.png"]
        mesh = trimesh.load(tmp_path / f"astro.{fmt}", process=False)
        assert len(mesh.vertices) == bundled_model.n_vertices and len(mesh.faces) == len(bundled_model.triangles)
        np.testing.assert_allclose(mesh.vertices, rec.vertices, atol=1e-3)
    depth = read_depth_png(tmp_path / "astro_depth.png")
    assert depth.shape == (SIZE, SIZE)
    np.testing.assert_allclose(depth, rec.depth, atol=0.5 / DEPTH_SCALE + 1e-4)
    with Image.open(tmp_path / "astro_overlay.png") as im:
        assert (im.size, im.mode) == ((SIZE, SIZE), "RGB")
        np.testing.assert_array_equal(np.asarray(im), rec.overlay)
    assert not list(tmp_path.glob("*.tmp*"))


def reconstruct_cli(*args):
    return cli("reconstruct", *args)


def test_cli_happy_path_and_per_file_errors(astronaut, ckpt_file, model_file, tmp_path):
    _, photo = astronaut
    out = tmp_path / "out"
    result = reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out, "--format", "ply", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.ply", "astronaut_depth.png", "astronaut_overlay.png"]
    assert "astronaut.jpg: face at" in result.stdout
    # a text file named .jpg, and a photo without a face: one error line each; the good photo is still done
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture\n")
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(blank)
    for bad, fragment in ((fake, "fake.jpg: not an image"), (blank, "blank.png: no face found")):
        result = reconstruct_cli(bad, "--checkpoint", ckpt_file, "--out", out, "--device", "cpu")
        assert_user_error(result, fragment)
        assert not (out / f"{bad.stem}_overlay.png").exists()
    out2 = tmp_path / "out2"
    result = reconstruct_cli(fake, photo, "--checkpoint", ckpt_file, "--out", out2, "--device", "cpu")
    assert_user_error(result, "fake.jpg: not an image")
    assert (out2 / "astronaut.obj").is_file() and not (out2 / "fake.obj").exists()
    # a 1 kB PNG whose header claims 50000 × 50000 pixels: refused before decoding; the next photo is done
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(header_bomb())
    out3 = tmp_path / "out3"
    result = reconstruct_cli(bomb, photo, "--checkpoint", ckpt_file, "--out", out3, "--device", "cpu")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "bomb.png: 2500000000 pixels is more than the 100,000,000 synthface decodes" in result.stderr
    assert (out3 / "astronaut.obj").is_file() and not (out3 / "bomb.obj").exists()
    # whole-run errors
    assert_user_error(reconstruct_cli(photo, "--checkpoint", tmp_path / "nope.pt", "--out", out),
                      "checkpoint not found")
    assert_user_error(reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out, "--model", model_file),
                      "trained on model")
