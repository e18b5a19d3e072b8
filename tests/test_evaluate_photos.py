"""``synthface evaluate --photos``: landmark error on photos with ibug .pts annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synthface import sample_params
from synthface.errors import ReconstructError
from synthface.evaluate_photos import evaluate_photos, nme
from synthface.framing import face_frame
from synthface.geometry import pose_to_camera, rotation_angles, rotation_matrices
from synthface.photo import crop_square, photo_focal, read_image, read_pts
from synthface.predict import load_checkpoint
from synthface.render import FaceRenderer, RenderSettings
from synthface.targets import PARAM_VECTOR, ParameterNormalizer, encode_pose

from .helpers import assert_user_error, cli
from .test_evaluate import checkpoint_dict

PHOTO = 256
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_pts(path, xy: np.ndarray) -> None:
    """An ibug .pts file of (68, 2) corner-origin pixel coordinates (the format's are 1-based centres)."""
    lines = "\n".join(f"{x + 0.5:.4f} {y + 0.5:.4f}" for x, y in xy)
    path.write_text(f"version: 1\nn_points:  {len(xy)}\n{{\n{lines}\n}}\n")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, bundled_model, gl_ctx):
    """The mean face rendered as two 256 px 'photos' (a 50° camera): looking at the camera, and turned
    35°; each with its landmarks as a .pts file."""
    folder = tmp_path_factory.mktemp("annotated")
    model, frame = bundled_model, face_frame(bundled_model)
    params = sample_params(model, seed=0, indices=range(2))
    params["identity"][:] = 0
    params["expression"][:] = 0
    f = photo_focal((PHOTO, PHOTO), 50.0)
    params["intrinsics"][:] = [[f, 0, PHOTO / 2], [0, f, PHOTO / 2], [0, 0, 1]]
    distance = f * frame.extent / (0.4 * PHOTO)  # the face box spans 40 % of the photo
    pose = np.zeros((2, 6))
    pose[1, 0] = np.radians(35.0)
    rot, _ = pose_to_camera(pose)
    pose[:, 3:] = -(rot @ frame.centre) + [0.0, 0.0, distance]  # aimed at the face, as the generator does
    params["pose"] = pose.astype(np.float32)
    with FaceRenderer(model, RenderSettings(PHOTO, faces_per_draw=2), ctx=gl_ctx) as renderer:
        out = renderer.render(params)
    for name, image, xy in zip(("frontal", "turned"), out.image, out.landmarks_xy, strict=True):
        Image.fromarray(image).save(folder / f"{name}.png")
        write_pts(folder / f"{name}.pts", xy)
    Image.fromarray(out.image[0]).save(folder / "unannotated.png")
    return folder, params["pose"][0], out.landmarks_xy


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory, bundled_model, photos):
    """Untrained nets (they return the normalizer's mean) whose mean is the frontal photo's face exactly:
    its pose as the landmark crop's virtual camera sees it."""
    folder, pose, _ = photos
    truth = read_pts(folder / "frontal.pts")
    lo, hi = truth.min(0), truth.max(0)
    crop = crop_square(read_image(folder / "frontal.png"), (*lo, *(hi - lo)), 64, 0.75, 50.0, "landmarks")
    turn = crop.rotation.T  # photo camera → the crop's
    virtual = np.concatenate([rotation_angles(turn @ rotation_matrices(pose[None, :3].astype(np.float64)))[0],
                              turn @ pose[3:]])
    m = bundled_model
    sizes = (m.n_identity, m.n_expression, 6)
    mean = np.zeros(sum(sizes), np.float32)
    mean[-6:] = encode_pose(virtual[None], crop.intrinsics[None].astype(np.float64))[0]
    normalizer = ParameterNormalizer(PARAM_VECTOR, sizes, mean, np.ones(sum(sizes), np.float32))
    path = tmp_path_factory.mktemp("ckpt") / "mean.pt"
    record = {"path": "renders", "face_fraction": [0.7, 0.8]}
    torch.save({**checkpoint_dict(normalizer, m), "image_size": 64, "data": [record]}, path)
    return path


def test_nme_is_the_mean_distance_over_the_outer_eye_corners():
    truth = np.zeros((1, 68, 2))
    truth[0, 45, 0] = 10.0  # outer eye corners 10 px apart
    shifted = truth + np.array([3.0, 4.0])  # every point 5 px off
    all68, inner51 = nme(shifted, truth)
    assert all68 == pytest.approx([0.5]) and inner51 == pytest.approx([0.5])
    jaw_only = truth.copy()
    jaw_only[0, :17] += [0.0, 6.8]  # the jaw outline is not among the inner 51
    all68, inner51 = nme(jaw_only, truth)
    assert all68 == pytest.approx([6.8 * 17 / 68 / 10]) and inner51 == pytest.approx([0.0])


def test_read_pts_takes_the_300w_convention(tmp_path, photos):
    folder, _, xy = photos
    np.testing.assert_allclose(read_pts(folder / "frontal.pts"), xy[0], atol=1e-3)  # 1-based centres → corners
    bad = tmp_path / "bad.pts"
    write_pts(bad, xy[0][:19])
    with pytest.raises(ReconstructError, match=r"bad\.pts: 19 points .* not the 68"):
        read_pts(bad)
    bad.write_text("version: 1\nn_points: 68\n{\n1 2 3\n}\n")
    with pytest.raises(ReconstructError, match=r"bad\.pts: not an ibug \.pts file"):
        read_pts(bad)


def test_the_mean_face_scores_on_its_own_photo_and_fails_on_a_turned_head(photos, ckpt_file, bundled_model):
    folder, _, _ = photos
    ckpt = load_checkpoint(ckpt_file)
    assert ckpt.face_fraction == pytest.approx(0.75)
    result = evaluate_photos(folder, ckpt, bundled_model, boxes="landmarks")
    assert result["n_photos"] == 2 and result["without_pts"] == [str(folder / "unannotated.png")]
    frontal, turned = result["photos"]
    assert frontal["photo"].endswith("frontal.png") and turned["photo"].endswith("turned.png")
    for row in ("mean_face", "coarse"):  # untrained nets answer the normalizer's mean: the frontal face
        assert frontal[row]["nme_68"] < 1e-3 and frontal[row]["nme_51"] < 1e-3, frontal  # the whole chain is exact
        assert turned[row]["nme_51"] > 0.08, turned
        assert result["rows"][row]["failure_rate_51"] == 0.5
    # each detector finds the frontal render; crops from its box are framed alike, up to the scatter of
    # where a detector puts its box (bench_framing: the frame lands ~0.03 of the side off the crop's
    # centre, ~0.08 eye distances here; measured 0.055 from Haar's box, 0.086 from dlib's)
    for detector in ("haar", "dlib"):
        detected = evaluate_photos(folder, ckpt, bundled_model, boxes="detector", detector=detector)
        assert detected["detector"] == detector
        assert detected["photos"][0]["detected"] and detected["photos"][0]["mean_face"]["nme_51"] < 0.12


def test_cli_table_json_and_errors(photos, ckpt_file, model_file, tmp_path):
    folder, _, xy = photos
    out = tmp_path / "photos.json"
    result = cli("evaluate", "--photos", folder, "--checkpoint", ckpt_file, "--boxes", "landmarks", "--json", out,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "landmark error on 2 annotated photos" in result.stdout and "CoarseNet" in result.stdout
    assert "1 photos without a .pts file were left out" in result.stdout
    assert json.loads(out.read_text())["rows"]["mean_face"]["failure_rate_51"] == 0.5
    assert_user_error(cli("evaluate", "--checkpoint", ckpt_file), "give either --data (shards) or --photos")
    assert_user_error(cli("evaluate", "--photos", tmp_path / "nope", "--checkpoint", ckpt_file), "not a directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(empty / "a.png")
    assert_user_error(cli("evaluate", "--photos", empty, "--checkpoint", ckpt_file), "no photo")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(wrong / "a.png")
    write_pts(wrong / "a.pts", xy[0][:5])
    assert_user_error(cli("evaluate", "--photos", wrong, "--checkpoint", ckpt_file), "a.pts: 5 points")
