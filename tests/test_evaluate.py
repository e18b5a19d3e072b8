"""Evaluation and inference: the depth metric by hand, baselines and oracles through the renderer,
checkpoint loading and its errors, and ``synthface evaluate``."""

from __future__ import annotations

import json
import math
import os
import pickle

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import pytest
import torch

from synthface import load_model
from synthface.checkpoint import CHECKPOINT_VERSION
from synthface.data import ShardDataset
from synthface.evaluate import depth_error_percent, evaluate, parameter_errors, summarize
from synthface.feedback import feedback_settings
from synthface.nets import CoarseNet, FineNet
from synthface.predict import (
    CheckpointError,
    Predictor,
    check_model,
    load_checkpoint,
    mean_face_prediction,
    render_prediction,
)
from synthface.render import FaceRenderer
from synthface.targets import PARAM_VECTOR, ParameterNormalizer

from .conftest import make_model
from .helpers import assert_user_error, cli, make_dataset

SIZE = 32
N = 32
COARSE_ARGS = {"widths": [8, 16], "blocks": 1, "norm": "group", "hidden": 16}
FINE_ARGS = {"widths": [4, 8], "head": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- the metric by hand

def test_depth_error_is_a_percentage_of_the_gt_range_over_valid_pixels():
    gt = np.zeros((4, 3, 4), np.float32)
    mask = np.zeros((4, 3, 4), np.uint8)
    gt[:, :2, :] = np.array([[100, 102, 104, 106], [104, 106, 108, 110]], np.float32)  # range 10 mm
    mask[:, :2, :] = 1
    pred = gt.copy()
    pred[0] += 1.0  # 1 mm everywhere → 10 %, and 1 mm off the mask (row 2) is ignored
    pred[1, 0] += 3.0  # 3 mm on the 4 pixels of row 0 ...
    pred[1, 1] = 0.0  # ... and no surface on row 1: excluded, coverage 1/2
    pred[1, 2, 0] = 500.0  # spill off the gt mask: ignored
    pred[2] = 0.0  # no surface at all: undefined error, coverage 0
    pred[3, 0, 0] = np.nan  # non-finite counts as no surface
    pred[3, 1] += 2.0
    err = depth_error_percent(pred, gt, mask, align=False)
    np.testing.assert_allclose(err.percent[:2], [10.0, 30.0])
    assert math.isnan(err.percent[2])
    np.testing.assert_allclose(err.percent[3], 100 * (4 * 2.0 / 7) / 10)
    np.testing.assert_allclose(err.coverage, [1.0, 0.5, 0.0, 7 / 8])
    # Aligned (the default): a constant offset along the optical axis costs nothing; the median of
    # gt - pred over the valid pixels (here -2: four of seven pixels are 2 mm behind) is the shift.
    aligned = depth_error_percent(pred, gt, mask)
    np.testing.assert_allclose(aligned.percent[[0, 1]], [0.0, 0.0], atol=1e-12)
    assert math.isnan(aligned.percent[2])
    np.testing.assert_allclose(aligned.percent[3], 100 * (3 * 2.0 / 7) / 10)
    np.testing.assert_array_equal(aligned.coverage, err.coverage)
    tilted = gt[:1] + np.linspace(-2, 2, 4)[None, None, :] + 50.0  # a shape error under a 50 mm offset
    mean_abs = 4.0 / 3.0  # mean of |±2|, |±2/3| mm
    np.testing.assert_allclose(depth_error_percent(tilted, gt[:1], mask[:1]).percent, [100 * mean_abs / 10])
    # torch in, (B, 1, H, W) and a single (H, W) face
    t = depth_error_percent(torch.from_numpy(pred[:2, None]), torch.from_numpy(gt[:2, None]),
                            torch.from_numpy(mask[:2, None]).bool(), align=False)
    np.testing.assert_allclose(t.percent, [10.0, 30.0])
    np.testing.assert_allclose(depth_error_percent(pred[0], gt[0], mask[0], align=False).percent, [10.0])


def test_depth_error_is_undefined_without_a_face_or_a_range():
    gt = np.full((2, 2, 2), 100.0)
    mask = np.zeros((2, 2, 2), bool)
    mask[1] = True  # flat: zero range
    err = depth_error_percent(gt + 1, gt, mask)
    assert np.isnan(err.percent).all()
    assert math.isnan(err.coverage[0]) and err.coverage[1] == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        depth_error_percent(gt[:, :1], gt, mask)


def test_summarize_skips_undefined_samples():
    s = summarize([1.0, 2.0, 3.0, 4.0, np.nan])
    assert s == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25), "median": 2.5, "p90": 3.7, "n": 4,
                               "n_undefined": 1})
    assert summarize([np.nan]) == {"mean": None, "std": None, "median": None, "p90": None, "n": 0, "n_undefined": 1}


def test_parameter_errors_are_in_degrees_and_mm_with_angles_wrapped():
    norm = ParameterNormalizer(PARAM_VECTOR, (2, 1, 6), np.zeros(9), np.ones(9))
    truth = np.zeros((1, 9))
    pred = np.array([[0.5, -1.0, 0.25, math.pi - 0.01, 0.1, 0.0, 3.0, -4.0, 0.0]])
    truth[0, 3] = -math.pi + 0.01  # 0.02 rad apart across the wrap
    err = parameter_errors(pred, truth, norm)
    np.testing.assert_allclose(err[0], [0.5, 1.0, 0.25, math.degrees(0.02), math.degrees(0.1), 0, 3, 4, 0],
                               atol=1e-9)


# ---------------------------------------------------------------- data, checkpoints

@pytest.fixture(scope="module")
def model(model_file):
    return load_model(model_file)


@pytest.fixture(scope="module")
def data(tmp_path_factory, model):
    """32 faces of the sphere model at 32 px, in two shards."""
    out = tmp_path_factory.mktemp("eval") / "d"
    return make_dataset(out, model, n=N, seed=5, shard_size=16, size=SIZE)


@pytest.fixture(scope="module")
def normalizer(data):
    return ShardDataset(data).normalizer


def checkpoint_dict(normalizer: ParameterNormalizer, model, *, fine: bool = True, iterations: int = 2,
                    seed: int = 0) -> dict:
    """A checkpoint as the trainer writes it, from untrained nets (their last layers are zero)."""
    torch.manual_seed(seed)
    coarse = CoarseNet(normalizer.dim, **COARSE_ARGS)
    return {
        "format": "synthface-checkpoint", "version": CHECKPOINT_VERSION, "stage": "fine" if fine else "coarse",
        "step": 12,
        "stage_step": 4, "coarse": coarse.state_dict(), "coarse_args": {"n_params": normalizer.dim, **COARSE_ARGS},
        "coarse_iterations": iterations, "fine": FineNet(**FINE_ARGS).state_dict() if fine else None,
        "fine_args": FINE_ARGS if fine else {}, "normalizer": normalizer.state_dict(),
        "model": {"name": model.name, "sha256": model.sha256}, "image_size": SIZE,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        "data_state": {"epoch": 0}, "train_config": {"val_fraction": 0.25}, "data": ["d"],
    }


@pytest.fixture(scope="module")
def ckpt_file(tmp_path_factory, normalizer, model):
    path = tmp_path_factory.mktemp("ckpt") / "step-12.pt"
    torch.save(checkpoint_dict(normalizer, model), path)
    return path


@pytest.fixture(scope="module")
def renderer(model, gl_ctx, data):
    """Built after ``data``: an in-process generate() makes its own GL context current and releases it, which
    breaks a renderer on the shared context created before it (moderngl does not make a context current again)."""
    r = FaceRenderer(model, feedback_settings(SIZE, 16), ctx=gl_ctx)
    yield r
    r.release()


@pytest.fixture(scope="module")
def batch(data):
    ds = ShardDataset(data, split="all", fields=("image", "depth", "mask", *PARAM_VECTOR, "intrinsics"),
                      normalize=None)
    return {k: v.numpy() for k, v in torch.utils.data.default_collate([ds[i] for i in range(len(ds))]).items()}


# ---------------------------------------------------------------- baselines and oracles through the renderer

def test_ground_truth_scores_zero_and_the_mean_face_does_not(renderer, batch, model):
    gt, mask = batch["depth"][:, 0], batch["mask"][:, 0]
    perfect = render_prediction(renderer, {k: batch[k] for k in PARAM_VECTOR}, batch["intrinsics"])
    err = depth_error_percent(perfect.coarse_depth, gt, mask)
    assert err.percent.max() < 1e-3 and err.coverage.min() == 1.0
    base = mean_face_prediction(renderer, batch["pose"], batch["intrinsics"])
    assert (base.params["identity"] == 0).all() and (base.params["expression"] == 0).all()
    np.testing.assert_array_equal(base.params["pose"], batch["pose"])
    err = depth_error_percent(base.coarse_depth, gt, mask)
    assert np.isfinite(err.percent).all() and np.median(err.percent) > 2.0
    assert base.vertices.shape == (N, model.n_vertices, 3) and base.fine_depth is None
    assert base.depth is base.coarse_depth and base.mask.dtype == bool


def test_predictor_runs_coarse_feedback_render_and_fine(ckpt_file, model, renderer, batch):
    """An 'oracle' CoarseNet whose constant output walks to sample 0's parameters in its iterations:
    the Predictor must return them, render their depth exactly, and an untrained FineNet keep it."""
    ckpt = load_checkpoint(ckpt_file)
    norm = ckpt.normalizer
    target = norm.encode({k: batch[k][:2] for k in (*PARAM_VECTOR, "intrinsics")})
    with torch.no_grad():
        ckpt.coarse.head[-1].bias.copy_(torch.from_numpy(target[0] / ckpt.coarse_iterations))
    with Predictor(ckpt, model, renderer=renderer) as predictor:
        pred = predictor.predict(torch.from_numpy(batch["image"][:2]), batch["intrinsics"][:2])
    for k in PARAM_VECTOR:
        np.testing.assert_allclose(pred.params[k][0], batch[k][0], atol=1e-4)
        assert pred.params[k].shape == batch[k][:2].shape
    err = depth_error_percent(pred.depth, batch["depth"][:2, 0], batch["mask"][:2, 0])
    assert err.percent[0] < 0.01 and err.coverage[0] == 1.0
    assert pred.fine_depth is not None and pred.depth is pred.fine_depth
    np.testing.assert_allclose(pred.fine_depth, pred.coarse_depth, atol=1e-4)  # untrained FineNet: Δ = 0
    assert pred.coarse_depth.shape == pred.mask.shape == (2, SIZE, SIZE)
    assert pred.vertices.shape == (2, model.n_vertices, 3)


def test_evaluate_reports_every_row(data, ckpt_file, model, renderer, tmp_path, normalizer):
    result = evaluate(data, load_checkpoint(ckpt_file), model, split="all", renderer=renderer, batch_size=10)
    assert result["n_samples"] == N and result["split"] == "all"
    depth = result["depth_error_percent"]
    assert list(depth) == ["mean_face", "mean_face_true_pose", "coarse", "fine"]
    assert list(result["depth_error_percent_unaligned"]) == list(depth)
    for key, row in depth.items():
        assert row["n"] == N and row["mean"] > 0 and row["p90"] >= row["median"] and 0 < row["coverage"] <= 1
        assert row["mean"] <= result["depth_error_percent_unaligned"][key]["mean"] + 1e-9  # the median shift helps
    assert depth["mean_face_true_pose"]["mean"] > 2.0
    assert depth["mean_face"]["mean"] > depth["mean_face_true_pose"]["mean"]  # the mean pose is wrong too
    assert depth["fine"]["mean"] == pytest.approx(depth["coarse"]["mean"], rel=1e-5)  # untrained FineNet
    params = result["parameter_error"]
    assert list(params["coarse"]["columns"]) == normalizer.columns()
    true_pose = params["mean_face_true_pose"]["blocks"]
    assert true_pose["rotation_deg"] == 0 and true_pose["identity"] > 0
    assert params["mean_face"]["blocks"]["rotation_deg"] > 1  # the data's mean pose, not the sample's
    json.dumps(result, allow_nan=False)
    # coarse-only checkpoint: no FineNet row; --limit; the training run's val split
    path = tmp_path / "coarse.pt"
    torch.save(checkpoint_dict(normalizer, model, fine=False), path)
    small = evaluate([data], load_checkpoint(path), model, split="val", limit=3, renderer=renderer)
    assert list(small["depth_error_percent"]) == ["mean_face", "mean_face_true_pose", "coarse"]
    assert small["n_samples"] == 3 and small["val_fraction"] == 0.25


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip(ckpt_file, normalizer, model, tmp_path):
    ckpt = load_checkpoint(ckpt_file)
    raw = torch.load(ckpt_file, weights_only=False)
    assert (ckpt.stage, ckpt.step, ckpt.coarse_iterations, ckpt.image_size) == ("fine", 12, 2, SIZE)
    assert (ckpt.model_name, ckpt.model_sha256) == (model.name, model.sha256)
    assert ckpt.train_config == {"val_fraction": 0.25} and ckpt.data == ["d"]
    for net, key in ((ckpt.coarse, "coarse"), (ckpt.fine, "fine")):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        for name, value in net.state_dict().items():
            torch.testing.assert_close(value, raw[key][name], rtol=0, atol=0)
    np.testing.assert_array_equal(ckpt.normalizer.mean, normalizer.mean)
    check_model(ckpt, model)
    # weights saved from a DDP-wrapped net (keys 'module.…') load the same
    ddp = tmp_path / "ddp.pt"
    torch.save({**raw, "coarse": {f"module.{k}": v for k, v in raw["coarse"].items()}}, ddp)
    torch.testing.assert_close(load_checkpoint(ddp).coarse.state_dict(), ckpt.coarse.state_dict(), rtol=0, atol=0)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("damage, message", [
    ("missing", "checkpoint not found"),
    ("truncated", "not a readable synthface checkpoint"),
    ("garbage", "not a readable synthface checkpoint"),
    ("pickle", r"not a readable synthface checkpoint \(it holds objects other than tensors"),
    ("code", r"not a readable synthface checkpoint \(it holds .*GLOBAL posix.system"),
    ("list", "not a synthface checkpoint"),
    ("format", "not a synthface checkpoint .format 'something-else'"),
    ("version", "checkpoint version 7 is not 2"),
    ("keys", "missing coarse_iterations, normalizer"),
    ("shapes", "CoarseNet weights do not fit the recorded architecture .RuntimeError: Error.s. in loading state_dict"),
    ("no coarse", "holds no CoarseNet weights"),
    ("iterations", "coarse_iterations 0"),
])
def test_bad_checkpoints_are_named(tmp_path, ckpt_file, normalizer, model, damage, message):
    path = tmp_path / "bad.pt"
    good = checkpoint_dict(normalizer, model)
    if damage == "truncated":
        data = ckpt_file.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2048))
    elif damage == "pickle":
        path.write_bytes(pickle.dumps({"format": "synthface-checkpoint", "x": Evil()}))
    elif damage == "code":
        torch.save({**good, "x": Evil()}, path)
    elif damage != "missing":
        edits = {"list": [1, 2], "format": {**good, "format": "something-else"}, "version": {**good, "version": 7},
                 "keys": {k: v for k, v in good.items() if k not in ("normalizer", "coarse_iterations")},
                 "shapes": {**good, "coarse_args": {**good["coarse_args"], "hidden": 32}},
                 "no coarse": {**good, "coarse": None}, "iterations": {**good, "coarse_iterations": 0}}
        torch.save(edits[damage], path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_checkpoint_of_another_model_is_refused(ckpt_file, renderer):
    ckpt = load_checkpoint(ckpt_file)
    other = load_model()  # the bundled model
    with pytest.raises(CheckpointError, match=r"trained on model 'test-sphere-blendshape' .* pass --model"):
        Predictor(ckpt, other)
    import dataclasses

    same_sha_other_layout = dataclasses.replace(make_model("blendshape", n_id=4), sha256=ckpt.model_sha256)
    with pytest.raises(CheckpointError, match="does not fit model"):
        check_model(ckpt, same_sha_other_layout)


# ---------------------------------------------------------------- the command

def evaluate_cli(*args: object):
    return cli("evaluate", *args)


def test_cli_prints_the_table_and_writes_json(data, ckpt_file, model_file, tmp_path):
    out = tmp_path / "eval.json"
    result = evaluate_cli("--data", data, "--checkpoint", ckpt_file, "--model", model_file, "--split", "all",
                 "--limit", 20, "--device", "cpu", "--json", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "median" in line).split()
    assert header == ["mean", "std", "median", "p90", "coverage"]
    for label in ("mean face", "mean face, true pose", "CoarseNet", "CoarseNet+FineNet"):
        row = next(line for line in lines if line.strip().startswith(label + "  "))
        assert len(row[len(label) + 2:].split()) == 5
    report = json.loads(out.read_text())
    assert report["n_samples"] == 20
    assert set(report["depth_error_percent"]) == {"mean_face", "mean_face_true_pose", "coarse", "fine"}
    assert report["checkpoint"]["step"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no temporary left behind


def test_cli_errors_are_one_line(data, ckpt_file, model_file, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(ckpt_file.read_bytes()[:1000])
    common = ("--model", model_file, "--split", "all", "--device", "cpu")
    assert_user_error(evaluate_cli("--data", data, "--checkpoint", bad, *common), "cut.pt: not a readable")
    assert_user_error(evaluate_cli("--data", data, "--checkpoint", tmp_path / "none.pt", *common),
                      "checkpoint not found")
    assert_user_error(evaluate_cli("--data", data, "--checkpoint", ckpt_file, "--split", "all"), "pass --model")
    assert_user_error(evaluate_cli("--data", data, "--checkpoint", ckpt_file, *common,
                                   "--json", tmp_path / "no" / "x.json"), "does not exist")
    # a checkpoint of another image size: refused, not scored on a framing it never saw
    raw = torch.load(ckpt_file, weights_only=False)
    other = tmp_path / "64px.pt"
    torch.save({**raw, "image_size": 2 * SIZE}, other)
    assert_user_error(evaluate_cli("--data", data, "--checkpoint", other, *common),
                      f"was trained on {2 * SIZE} px images but {data} holds {SIZE} px ones")
    # a corrupt image chunk: found when the sample is read, named by shard and sample
    corrupt = tmp_path / "d"
    corrupt.mkdir()
    for f in data.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    with h5py.File(corrupt / "shard-000001.h5", "r") as f:
        chunk = f["image"].id.get_chunk_info(3)
    with open(corrupt / "shard-000001.h5", "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write((bytes(range(7, 256)) * (chunk.size // 249 + 1))[:chunk.size])  # junk (all-0xff passes Fletcher-32)
    assert_user_error(evaluate_cli("--data", corrupt, "--checkpoint", ckpt_file, *common),
                      "shard-000001.h5: cannot read 'image' of sample 19")
