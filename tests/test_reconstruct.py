"""Reconstruction of real photographs: face detection, crop and K, outputs, and ``synthface reconstruct``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from synthface import load_config, load_model, photo, sample_params
from synthface.errors import ConfigError, ReconstructError
from synthface.feedback import feedback_settings
from synthface.framing import DETECTOR_FRAMES, face_frame
from synthface.geometry import camera_vertices, project, transform
from synthface.photo import box_iou, crop_square, detect_face, detect_faces, photo_focal, read_image, resolve_detector
from synthface.predict import Predictor, load_checkpoint
from synthface.reconstruct import DEPTH_SCALE, read_depth_png, reconstruct, write_outputs
from synthface.render import FaceRenderer, RenderSettings
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
    k = crop_square(astronaut[0], detect_face(astronaut[0]), SIZE).intrinsics
    mean[-1] = math.log(DISTANCE_MM / k[0, 0])
    normalizer = ParameterNormalizer(PARAM_VECTOR, sizes, mean, np.ones(sum(sizes), np.float32))
    path = tmp_path_factory.mktemp("ckpt") / "bundled.pt"
    torch.save({**checkpoint_dict(normalizer, m), "image_size": SIZE}, path)
    return path


@pytest.mark.parametrize("detector", ["haar", "dlib"])
def test_detector_finds_the_astronauts_face(astronaut, detector):
    image, path = astronaut
    np.testing.assert_array_equal(read_image(path).shape, image.shape)
    # one face: dlib's weak box on the flag below her (score 0.1 beside her face's 1.5) is dropped
    assert len(detect_faces(image, detector)) == 1
    x, y, w, h = detect_face(image, detector)
    assert 0 <= x and 0 <= y and x + w <= image.shape[1] and y + h <= image.shape[0]
    assert 50 <= w <= 250 and 0.8 <= h / w <= 1.25
    # her face is in the upper half, left of centre
    assert y + h / 2 < image.shape[0] / 2 and x + w / 2 < image.shape[1] / 2
    with pytest.raises(ReconstructError, match="no face found"):
        detect_face(np.full((200, 200, 3), 128, np.uint8), detector)
    # a small copy (her face ~45 px): dlib's second pass at 2× finds it, the cascade too
    small = np.asarray(Image.fromarray(image).resize((256, 256), Image.Resampling.LANCZOS))
    assert box_iou(detect_face(small, detector), np.array([x, y, w, h]) / 2) > 0.5


def test_auto_detector_is_dlib_when_installed_else_haar(monkeypatch, astronaut, ckpt_file, tmp_path):
    assert resolve_detector("auto") == "dlib" and resolve_detector("haar") == "haar"  # dlib: a dev extra
    with pytest.raises(ConfigError, match="unknown face detector 'hog'"):
        resolve_detector("hog")
    monkeypatch.setattr(photo, "_has_dlib", lambda: False)  # as on an install without synthface[detect]
    assert resolve_detector("auto") == "haar"
    with pytest.raises(ReconstructError, match=r"pip install 'synthface\[detect\]'.*--detector haar"):
        detect_faces(astronaut[0], "dlib")
    assert_user_error(cli("reconstruct", astronaut[1], "--checkpoint", ckpt_file, "--out", tmp_path, "--detector",
                          "dlib"), "the dlib face detector is not installed")


def test_crop_is_the_view_of_a_camera_turned_toward_the_face(astronaut):
    image, _ = astronaut
    f = photo_focal(image.shape, 50.0)
    assert f == pytest.approx(256 / math.tan(math.radians(25)))
    # a box that is the face frame, at fraction 0.5: a 100 px square around its centre → 40 px
    crop = crop_square(image, (100, 100, 50, 50), 40, 0.5, detector="frame")
    assert crop.image.shape == (40, 40, 3) and crop.image.dtype == np.uint8 and crop.window == (75, 75, 100)
    np.testing.assert_allclose(crop.intrinsics, [[f * 0.4, 0, 20], [0, f * 0.4, 20], [0, 0, 1]], rtol=1e-6)
    # the virtual camera looks at the frame's centre: its optical axis lands there in the photo
    np.testing.assert_allclose(crop.to_photo(np.array([0.0, 0.0, 500.0])), [125, 125], atol=1e-6)
    np.testing.assert_allclose(crop.rotation @ crop.rotation.T, np.eye(3), atol=1e-12)
    # every crop pixel shows the photo where to_photo says: a white dot moved through both
    photo = np.zeros((300, 400, 3), np.uint8)
    photo[40:43, 60:63] = 255  # centred on pixel (61, 41): corner coordinates (61.5, 41.5)
    crop = crop_square(photo, (30, 10, 80, 80), 64, 0.8, detector="frame")
    assert crop.image[..., 0].max() > 0
    yy, xx = np.nonzero(crop.image[..., 0] == crop.image[..., 0].max())
    ray = np.linalg.solve(crop.intrinsics.astype(np.float64), [xx.mean() + 0.5, yy.mean() + 0.5, 1.0])
    np.testing.assert_allclose(crop.to_photo(ray), [61.5, 41.5], atol=0.7)
    # a detector's box is first turned into the frame it suggests (framing.DETECTOR_FRAMES)
    for detector in ("haar", "dlib"):
        frame = DETECTOR_FRAMES[detector]
        x0, y0, side = crop_square(image, (100, 100, 50, 50), 40, 0.5, detector=detector).window
        assert side == round(50 * frame.scale / 0.5)
        assert x0 + side / 2 == pytest.approx(125 + 50 * frame.dx, abs=1)
        assert y0 + side / 2 == pytest.approx(125 + 50 * frame.dy, abs=1)
    # "auto" is the frame of the detector detect_faces uses by default
    assert crop_square(image, (100, 100, 50, 50), 40, 0.5).window == \
        crop_square(image, (100, 100, 50, 50), 40, 0.5, detector=resolve_detector()).window
    # a box at the corner: the view leaves the photo and repeats its edge, it does not shrink
    assert crop_square(image, (0, 0, 60, 60), 32).image.shape == (32, 32, 3)


def test_reconstruct_writes_mesh_depth_and_overlay(astronaut, ckpt_file, bundled_model, gl_ctx, tmp_path):
    image, _ = astronaut
    renderer = FaceRenderer(bundled_model, feedback_settings(SIZE, 1), ctx=gl_ctx)
    try:
        with Predictor(load_checkpoint(ckpt_file), bundled_model, renderer=renderer) as predictor:
            rec = reconstruct(image, predictor)
    finally:
        renderer.release()
    assert rec.crop.image.shape == rec.overlay.shape == (SIZE, SIZE, 3)
    assert rec.depth.shape == rec.mask.shape == (SIZE, SIZE)
    assert 0.2 < rec.mask.mean() < 0.9  # the face fills a good part of the crop
    z = rec.depth[rec.mask]
    assert (z > DISTANCE_MM - 200).all() and (z < DISTANCE_MM + 200).all() and (rec.depth[~rec.mask] == 0).all()
    assert not np.array_equal(rec.overlay, rec.crop.image)
    # off the face the crop shows through, except at the landmark dots (visible ones green)
    xy = project(rec.vertices[None, bundled_model.landmark_indices], rec.crop.intrinsics[None])[0]
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    near = (np.hypot(xx[..., None] - xy[:, 0], yy[..., None] - xy[:, 1]) < 3.5).any(-1)
    np.testing.assert_array_equal(rec.overlay[~rec.mask & ~near], rec.crop.image[~rec.mask & ~near])
    seen = np.round(xy[rec.landmarks_visible] - 0.5).astype(int)
    dots = rec.overlay[seen[:, 1].clip(0, SIZE - 1), seen[:, 0].clip(0, SIZE - 1)].astype(int)
    assert rec.landmarks_visible.sum() > 30 and (dots[:, 1] > dots[:, 0] + 60).mean() > 0.9
    for fmt in ("obj", "ply"):
        written = write_outputs(rec, tmp_path, "astro", mesh_format=fmt)
        assert [p.name for p in written] == [f"astro.{fmt}", "astro_depth.png", "astro_overlay.png", "astro.json"]
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
    check_json(tmp_path / "astro.json", rec, image)


def check_json(path, rec, image):
    """STEM.json read back: the photo's landmarks are the crop's mapped out, and the photo camera with the
    photo pose puts the mesh's landmarks on them."""
    record = json.loads(path.read_text())
    assert record["format"] == "synthface-reconstruction" and record["version"] == 1
    assert (record["photo"]["height"], record["photo"]["width"]) == image.shape[:2]
    assert record["box"]["xywh"] == list(rec.box)
    xy = np.array(record["landmarks"]["xy"])
    assert xy.shape == (68, 2) and len(record["landmarks"]["visible"]) == 68
    x0, y0, side = (record["crop"][k] for k in ("x0", "y0", "side"))
    assert x0 <= xy[:, 0].min() and xy[:, 0].max() <= x0 + side and y0 <= xy[:, 1].min() <= xy[:, 1].max() <= y0 + side
    k = np.array(record["camera"]["intrinsics"])
    assert record["camera"]["fov_deg"] == pytest.approx(50.0) and k[0, 2] == image.shape[1] / 2
    pose = record["pose"]
    full = {"identity": np.array([record["identity"]]), "expression": np.array([record["expression"]]),
            "pose": np.concatenate([np.radians([pose["yaw_deg"], pose["pitch_deg"], pose["roll_deg"]]),
                                    pose["translation_mm"]])[None]}
    # the crop's camera looks up at her face (upper half of the photo): the photo's pitch differs by that turn
    assert abs(pose["pitch_deg"] - np.degrees(rec.params["pose"][1])) > 5
    model = load_model()
    lm = project(camera_vertices(model, full)[:, model.landmark_indices], k[None])[0]
    np.testing.assert_allclose(lm, xy, atol=0.01)


def reconstruct_cli(*args):
    return cli("reconstruct", *args)


def test_cli_happy_path_and_per_file_errors(astronaut, ckpt_file, model_file, tmp_path):
    _, photo = astronaut
    out = tmp_path / "out"
    result = reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out, "--format", "ply", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.json", "astronaut.ply", "astronaut_depth.png",
                                                     "astronaut_overlay.png"]
    assert "astronaut.jpg: face at" in result.stdout
    detected = json.loads((out / "astronaut.json").read_text())
    assert detected["box"]["source"] == resolve_detector() == "dlib"  # installed with the dev extras
    # --detector haar: OpenCV's cascade instead, its box in the JSON under its name
    out_haar = tmp_path / "out_haar"
    result = reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out_haar, "--detector", "haar",
                             "--device", "cpu")
    assert result.exit_code == 0, result.output
    haar = json.loads((out_haar / "astronaut.json").read_text())["box"]
    assert haar["source"] == "haar" and box_iou(haar["xywh"], detected["box"]["xywh"]) > 0.5
    # --box: the face given, not detected; the crop is the square that frames it
    out_box = tmp_path / "out_box"
    result = reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out_box, "--box", "170,60,110,150",
                             "--face-fraction", "0.5", "--device", "cpu")
    assert result.exit_code == 0, result.output
    given = json.loads((out_box / "astronaut.json").read_text())
    assert given["box"] == {"xywh": [170, 60, 110, 150], "source": "frame"}
    assert (given["crop"]["x0"], given["crop"]["y0"], given["crop"]["side"]) == (75, -15, 300)
    for bad, fragment in (("1,2,3", "is not four numbers"), ("10,10,0,5", "width or height <= 0")):
        assert_user_error(reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out_box, "--box", bad), fragment)
    result = reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out_box, "--box", "900,900,50,50",
                             "--device", "cpu")
    assert_user_error(result, "lies outside the 512 × 512 photo")
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


def test_a_render_through_the_photo_path_comes_back_to_its_own_framing(bundled_model, gl_ctx, tmp_path):
    """Renders saved as PNG, read, detected and cropped as photos are: each crop frames the face as the
    generator framed it — the face box's centre near the crop's, its extent within the sampled fractions."""
    size, n = 192, 12
    cfg = load_config(overrides={"image_size": size, "pose.yaw_deg": [-15, 15], "pose.pitch_deg": [-10, 10],
                                 "pose.roll_deg": [-5, 5]})
    params = sample_params(bundled_model, seed=3, indices=range(n), config=cfg)
    with FaceRenderer(bundled_model, RenderSettings(size, faces_per_draw=n), ctx=gl_ctx) as renderer:
        images = renderer.render(params).image
    frame = face_frame(bundled_model)
    centre = transform(np.broadcast_to(frame.centre, (n, 1, 3)), params["pose"].astype(np.float64))[:, 0]
    fov = np.degrees(2 * np.arctan(size / 2 / params["intrinsics"][:, 0, 0]))  # the renders' own camera
    offsets, fractions = [], []
    for i in range(n):
        Image.fromarray(images[i]).save(tmp_path / f"{i}.png")
        photo = read_image(tmp_path / f"{i}.png")
        try:
            box = detect_face(photo)
        except ReconstructError:
            continue
        crop = crop_square(photo, box, SIZE, 0.75, float(fov[i]))
        virtual = crop.rotation.T @ centre[i]  # the face box's centre in the crop's camera
        xy = crop.intrinsics.astype(np.float64) @ (virtual / virtual[2])
        offsets.append(np.abs(xy[:2] - SIZE / 2).max() / SIZE)
        fractions.append(crop.intrinsics[0, 0] * frame.extent / virtual[2] / SIZE)
    assert len(offsets) >= 8  # Haar finds most upright renders
    offsets, fractions = np.array(offsets), np.array(fractions)
    # the generator: centre within ±0.05 of the side, fraction 0.6–0.9 (the crop aims at 0.75)
    assert np.median(offsets) < 0.05 and (offsets < 0.1).mean() >= 0.9, offsets
    assert abs(np.median(fractions) - 0.75) < 0.06 and ((fractions > 0.6) & (fractions < 0.9)).mean() >= 0.9, fractions


def test_photos_of_every_kind_reconstruct_or_say_why(astronaut, ckpt_file, tmp_path):
    """Greyscale, 16-bit, RGBA and CMYK photos are read as 8-bit RGB (alpha ignored) and reconstructed; a
    photo too small for a face is one error line; a 6000 px photo's face is found where the 512 px one's is."""
    import cv2

    image, _ = astronaut
    folder = tmp_path / "kinds"
    folder.mkdir()
    Image.fromarray(image).convert("L").save(folder / "grey.png")
    cv2.imwrite(str(folder / "deep.png"), image[:, :, ::-1].astype(np.uint16) * 257)  # 16 bits per channel
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    rgba[:64, :64, 3] = 0
    Image.fromarray(rgba).save(folder / "alpha.png")
    Image.fromarray(image).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(image).resize((6000, 6000), Image.BICUBIC).save(folder / "huge.jpg", quality=85)
    Image.fromarray(image).resize((20, 20)).save(folder / "tiny.png")
    reference = detect_face(image)
    for name in ("grey.png", "deep.png", "alpha.png", "cmyk.jpg", "huge.jpg"):
        read = read_image(folder / name)
        assert read.shape[2] == 3 and read.dtype == np.uint8, name
        box = np.array(detect_face(read)) * 512 / read.shape[0]
        assert np.abs(box - reference).max() < 0.1 * reference[2], (name, box, reference)
    out = tmp_path / "out"
    result = reconstruct_cli(*sorted(folder.iterdir()), "--checkpoint", ckpt_file, "--out", out, "--device", "cpu")
    assert_user_error(result, "tiny.png: 20 × 20 pixels is too small to hold a face")
    done = sorted(p.stem for p in out.glob("*.json"))
    assert done == ["alpha", "cmyk", "deep", "grey", "huge"] and not list(out.glob("tiny*"))
    assert json.loads((out / "huge.json").read_text())["photo"] == {"width": 6000, "height": 6000}


def test_all_faces_reconstructs_each_detected_face(astronaut, ckpt_file, tmp_path):
    image, photo = astronaut
    two = np.zeros((512, 900, 3), np.uint8)
    two[:, :512] = image
    two[64:448, 516:900] = np.asarray(Image.fromarray(image).resize((384, 384)))  # a smaller second face
    path = tmp_path / "two.png"
    Image.fromarray(two).save(path)
    out = tmp_path / "out"
    result = reconstruct_cli(path, "--checkpoint", ckpt_file, "--out", out, "--all-faces", "--device", "cpu")
    assert result.exit_code == 0, result.output
    boxes = [json.loads((out / f"two_face{i}.json").read_text())["box"]["xywh"] for i in range(2)]
    assert boxes[0][2] > boxes[1][2] and boxes[0][0] < 512 <= boxes[1][0]  # largest first: hers, then the copy
    assert json.loads((out / "two_face1.json").read_text())["box"]["source"] == resolve_detector()
    assert_user_error(reconstruct_cli(photo, "--checkpoint", ckpt_file, "--out", out, "--all-faces", "--box",
                                      "1,1,9,9"), "--box gives one face and --all-faces")
