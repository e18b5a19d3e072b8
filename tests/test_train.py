"""train: both stages on a tiny dataset, the checkpoint contract, exact resume, DDP over gloo, TensorBoard, errors."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import pytest
import torch

from synthface import load_model
from synthface.batches import StepBatches, batch_positions
from synthface.checkpoint import CHECKPOINT_VERSION, read_checkpoint
from synthface.errors import CheckpointError, ConfigError, SynthfaceError
from synthface.nets import CoarseNet
from synthface.predict import load_checkpoint
from synthface.targets import ParameterNormalizer
from synthface.train import TrainConfig, train

from .helpers import assert_user_error, cli, header_bomb, make_dataset

SIZE = 32
TINY = {"coarse_widths": (8, 16), "coarse_blocks": 1, "coarse_hidden": 32, "fine_widths": (8, 16), "fine_head": 16,
        "batch_size": 8, "num_workers": 0, "threads": 1, "val_batches": 1, "faces_per_draw": 8, "log_every": 1}
CONTRACT = {"format", "version", "stage", "step", "stage_step", "coarse", "coarse_args", "coarse_iterations", "fine",
            "fine_args", "normalizer", "model", "image_size", "optimizer", "rng", "data_state", "train_config", "data"}


@pytest.fixture
def deterministic():
    """torch's deterministic algorithms for one test (a global switch: restored after it)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(scope="module")
def model(model_file):
    return load_model(model_file)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model) -> Path:
    out = tmp_path_factory.mktemp("train-data") / "d"
    return make_dataset(out, model, n=64, seed=0, shard_size=32, size=SIZE)


@pytest.fixture(scope="module")
def coarse_run(tmp_path_factory, dataset, model) -> tuple[Path, dict]:
    """Both stages, two steps each, with a checkpoint, a validation and TensorBoard scalars at every step."""
    out = tmp_path_factory.mktemp("train-run") / "run"
    config = TrainConfig(stage="all", steps=2, checkpoint_every=1, val_every=1, **TINY)
    return out, train(dataset, out, config, model=model)


def test_both_stages_run_with_finite_losses(coarse_run):
    _, summary = coarse_run
    assert summary["step"] == 4 and summary["world_size"] == 1
    coarse, fine = summary["stages"]["coarse"], summary["stages"]["fine"]
    assert coarse["steps"] == 2 and fine["steps"] == 2
    for key in ("loss", "param_mse_t1", "param_mse_t3", "vertex_mm_t3", "landmark_side_t3"):
        assert np.isfinite(coarse["train"][key]) and coarse["train"][key] > 0, key
    for key in ("loss", "shading", "fidelity", "smoothness", "depth_mm", "coarse_depth_mm"):
        assert np.isfinite(fine["train"][key]), key
    assert set(coarse["val"]) == {"param_mse", "vertex_mm", "landmark_side"}
    assert np.isfinite(list(coarse["val"].values())).all()
    assert np.isfinite(list(fine["val"].values())).all() and fine["val"]["depth_mm"] > 0


def test_checkpoint_contract(coarse_run, dataset, model):
    out, _ = coarse_run
    folder = out / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["latest.pt", *(f"step-{s:07d}.pt" for s in range(1, 5))]  # no temporaries left
    latest = read_checkpoint(folder / "latest.pt")
    raw = latest.to_dict()  # the on-disk contract
    assert CONTRACT <= set(raw)
    assert (folder / "latest.pt").read_bytes() == (folder / "step-0000004.pt").read_bytes()
    assert raw["format"] == "synthface-checkpoint" and raw["version"] == CHECKPOINT_VERSION
    assert (latest.stage, latest.step, latest.stage_step) == ("fine", 4, 2)
    assert raw["model"] == {"name": model.name, "sha256": model.sha256} and latest.image_size == SIZE
    assert set(latest.coarse_args) == {"n_params", "widths", "blocks", "norm", "hidden"}
    assert latest.coarse_iterations == 3 and latest.train_config["steps"] == 2
    assert latest.data[0]["manifest_sha256"] == hashlib.sha256((dataset / "manifest.json").read_bytes()).hexdigest()
    # the data's framing, which photo crops reproduce (synthface.framing)
    fraction = json.loads((dataset / "manifest.json").read_text())["config"]["camera"]["face_fraction"]
    assert latest.data[0]["face_fraction"] == fraction
    assert load_checkpoint(folder / "latest.pt").face_fraction == pytest.approx(sum(fraction) / 2)
    normalizer = ParameterNormalizer.from_state_dict(raw["normalizer"])
    assert normalizer.dim == latest.coarse_args["n_params"] == model.n_identity + model.n_expression + 6
    coarse, fine = latest.coarse_net(), latest.fine_net()
    assert coarse.n_params == normalizer.dim and fine is not None
    end_of_coarse = read_checkpoint(folder / "step-0000002.pt")
    assert (end_of_coarse.stage, end_of_coarse.stage_step, end_of_coarse.fine) == ("coarse", 2, None)
    for k, v in end_of_coarse.coarse.items():  # the fine stage trains FineNet only
        assert torch.equal(v, latest.coarse[k]), k
    assert (out / "run.json").is_file()


def test_tensorboard_scalars(coarse_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = coarse_run
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    want = {"train/coarse/loss", "train/coarse/param_mse_t1", "train/coarse/vertex_mm_t3", "lr/coarse",
            "val/coarse/vertex_mm", "train/fine/loss", "train/fine/shading", "train/fine/depth_mm", "lr/fine",
            "val/fine/depth_mm"}
    assert want <= tags, want - tags
    assert [e.step for e in acc.Scalars("train/fine/loss")] == [3, 4]


def test_data_order_is_deterministic_and_split_across_ranks():
    first = batch_positions(50, 8, seed=1, stage="coarse", step=0)
    assert np.array_equal(first, batch_positions(50, 8, seed=1, stage="coarse", step=0))
    epoch = np.concatenate([batch_positions(50, 8, 1, "coarse", s) for s in range(6)])
    assert len(set(epoch.tolist())) == 48  # one epoch: 6 disjoint batches, the incomplete last one dropped
    assert not np.array_equal(first, batch_positions(50, 8, 1, "coarse", 6))  # next epoch, new order
    assert not np.array_equal(first, batch_positions(50, 8, 1, "fine", 0))
    ranks = [list(StepBatches(50, 8, 1, "coarse", 3, 5, rank=r, world=2)) for r in range(2)]
    for k, step in enumerate((3, 4)):
        assert sorted(ranks[0][k] + ranks[1][k]) == [(p, 0) for p in sorted(batch_positions(50, 8, 1, "coarse", step))]
    assert {e for batch in StepBatches(50, 8, 1, "coarse", 5, 13) for _, e in batch} == {0, 1, 2}  # 6 steps an epoch


class _Crash(Exception):
    pass


def _crash_at(global_step: int):
    count = {"n": 0}

    def progress(stage, stage_step, total, metrics):
        count["n"] += 1
        if count["n"] == global_step:
            raise _Crash(stage)

    return progress


def test_exact_resume_after_crashes(tmp_path, dataset, model, deterministic):
    """Straight 3 + 3 steps vs crashes after global steps 2 (mid-coarse) and 5 (mid-fine) and two resumes."""
    config = TrainConfig(stage="all", steps=3, checkpoint_every=2, val_every=0, seed=5, **TINY)
    straight = tmp_path / "straight"
    first = train(dataset, straight, config, model=model)
    run = tmp_path / "crashed"
    with pytest.raises(_Crash):
        train(dataset, run, config, model=model, progress=_crash_at(2))
    assert read_checkpoint(run / "checkpoints" / "latest.pt").step == 2
    (run / "checkpoints" / "latest.pt").unlink()  # killed between step-0000002.pt and latest.pt
    with pytest.raises(_Crash):
        train(dataset, run, config, model=model, resume=True, progress=_crash_at(3))  # global steps 3, 4, 5
    assert read_checkpoint(run / "checkpoints" / "latest.pt").stage_step == 2
    summary = train(dataset, run, config, model=model, resume=True)
    assert summary["resumed_from"] == 5 and summary["step"] == 6
    a = read_checkpoint(straight / "checkpoints" / "latest.pt")
    b = read_checkpoint(run / "checkpoints" / "latest.pt")
    assert a.step == b.step == 6
    for net in ("coarse", "fine"):
        for k in getattr(a, net):
            assert torch.equal(getattr(a, net)[k], getattr(b, net)[k]), (net, k)
    for k, state in a.optimizer["state"].items():
        assert torch.equal(state["exp_avg_sq"], b.optimizer["state"][k]["exp_avg_sq"])
    digest = summary["stages"]["fine"]["weights_sha256"]  # what DDP ranks compare: the weights' sha256
    assert digest == first["stages"]["fine"]["weights_sha256"] != first["stages"]["coarse"]["weights_sha256"]


def test_train_leaves_torch_global_state_as_it_found_it(tmp_path, dataset, model):
    """Threads, seeds and RNG states are the run's business: a library call (even one that fails
    midway) hands the caller back its own."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # not the run's (TINY: 1)
    try:
        torch.manual_seed(1234)
        rng = torch.get_rng_state()
        config = TrainConfig(stage="coarse", steps=2, val_every=0, **TINY)
        with pytest.raises(_Crash):
            train(dataset, tmp_path / "r", config, model=model, progress=_crash_at(1))
        train(dataset, tmp_path / "r", config, model=model, resume=True)
        assert torch.get_num_threads() == 3 and torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.set_num_threads(threads)


def test_fine_stage_from_a_coarse_checkpoint(tmp_path, coarse_run, dataset, model):
    out, _ = coarse_run
    given = out / "checkpoints" / "step-0000002.pt"
    config = TrainConfig(stage="fine", steps=1, val_every=0, **TINY)
    summary = train(dataset, tmp_path / "fine", config, model=model, coarse_checkpoint=given)
    assert list(summary["stages"]) == ["fine"] and np.isfinite(summary["stages"]["fine"]["train"]["loss"])
    ckpt = read_checkpoint(tmp_path / "fine" / "checkpoints" / "latest.pt")
    assert (ckpt.stage, ckpt.step) == ("fine", 1)
    coarse = read_checkpoint(given)
    assert all(torch.equal(v, ckpt.coarse[k]) for k, v in coarse.coarse.items())
    assert np.array_equal(ckpt.normalizer.mean, coarse.normalizer.mean)


def test_fine_loss_uses_the_shards_lighting(tmp_path, coarse_run, dataset, model):
    """``sfs_appearance="shard"``: the SfS loss shades with each sample's stored lighting, so the same
    images with other stored lighting give another shading term; ``"estimated"`` solves the lighting
    from the image and does not look at the stored one."""
    given = coarse_run[0] / "checkpoints" / "step-0000002.pt"
    relit = tmp_path / "relit"
    shutil.copytree(dataset, relit)
    for shard in sorted(relit.glob("*.h5")):
        with h5py.File(shard, "r+") as f:
            f["params/light"][...] = 1.5 * f["params/light"][()]

    def shading(data: Path, appearance: str) -> float:
        config = TrainConfig(stage="fine", steps=1, val_every=0, sfs_appearance=appearance, **TINY)
        out = tmp_path / f"{data.name}-{appearance}"
        return train(data, out, config, model=model, coarse_checkpoint=given)["stages"]["fine"]["train"]["shading"]

    assert shading(relit, "shard") > 1.2 * shading(dataset, "shard")
    assert shading(relit, "estimated") == shading(dataset, "estimated")


def test_fine_loss_shades_where_the_shards_show_the_face(tmp_path, coarse_run, dataset, model):
    """``sfs_mask="visible"``: the SfS shading term covers only pixels the shard's ``mask`` shows as face
    (no hair, occluder or background), so shards whose mask is empty give no shading term at all;
    ``"coarse"`` shades the whole coarse mask and does not look at the shard's."""
    given = coarse_run[0] / "checkpoints" / "step-0000002.pt"
    hidden = tmp_path / "hidden"
    shutil.copytree(dataset, hidden)
    for shard in sorted(hidden.glob("*.h5")):
        with h5py.File(shard, "r+") as f:
            f["mask"][...] = 0

    def shading(data: Path, sfs_mask: str) -> float:
        config = TrainConfig(stage="fine", steps=1, val_every=0, sfs_mask=sfs_mask, **TINY)
        out = tmp_path / f"{data.name}-{sfs_mask}"
        return train(data, out, config, model=model, coarse_checkpoint=given)["stages"]["fine"]["train"]["shading"]

    assert shading(dataset, "visible") > 0 and shading(hidden, "visible") == 0
    assert shading(hidden, "coarse") == shading(dataset, "coarse") > 0
    with pytest.raises(ConfigError, match="sfs_mask"):
        TrainConfig(sfs_mask="hair")


def test_checkpoint_write_failure_leaves_no_partial_file(tmp_path, dataset, model, monkeypatch):
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        calls["n"] += str(dst).endswith(".pt")
        if str(dst).endswith(".pt") and calls["n"] == 3:  # the second checkpoint's step file
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    config = TrainConfig(stage="coarse", steps=2, checkpoint_every=1, val_every=0, **TINY)
    with pytest.raises(CheckpointError, match="No space left"):
        train(dataset, tmp_path / "run", config, model=model)
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest.pt", "step-0000001.pt"]
    assert read_checkpoint(folder / "latest.pt").step == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path, dataset, model_file, model):
    """torchrun, 2 gloo processes: both ranks end with identical weights, and CoarseNet equals a
    single-process run on the same global batches (DDP averages the two half-batch gradients)."""
    out = tmp_path / "ddp"
    args = ["--data", str(dataset), "--stage", "all", "--steps", "2", "--batch-size", "4", "--model", model_file,
            "--num-workers", "0", "--optimizer", "sgd", "--lr", "0.01", "--coarse-iterations", "2",
            "--faces-per-draw", "1", "--val-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(_free_port()), "-m", "synthface", "train", "--out",
                           str(out), *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # rank 0 alone reports; the ranks compared their weights' sha256 at the end of each stage
    assert "on 2 process(es) (all 2 hold the same weights)" in proc.stdout and proc.stdout.count("trained ") == 1
    ddp = read_checkpoint(out / "checkpoints" / "step-0000002.pt")
    assert read_checkpoint(out / "checkpoints" / "latest.pt").step == 4

    single = TrainConfig(stage="coarse", steps=2, batch_size=4, optimizer="sgd", lr=0.01, coarse_iterations=2,
                         faces_per_draw=1, val_every=0, num_workers=0)
    train(dataset, tmp_path / "single", single, model=model)
    ref = read_checkpoint(tmp_path / "single" / "checkpoints" / "latest.pt")
    torch.manual_seed(ref.train_config["seed"])  # the initial weights, as train() draws them
    a = ref.coarse_args
    init = CoarseNet(a["n_params"], widths=tuple(a["widths"]), blocks=a["blocks"], hidden=a["hidden"]).state_dict()
    for k, w in ref.coarse.items():
        moved = (w - init[k]).norm()
        assert (ddp.coarse[k] - w).norm() <= 1e-3 * moved + 1e-7, k  # float noise only, not half a batch


# ---------------------------------------------------------------- CLI

def test_cli_trains_and_resumes(tmp_path, dataset, model_file):
    out = tmp_path / "run"
    base = ["train", "--data", str(dataset), "--out", str(out), "--model", model_file, "--batch-size", "4",
            "--stage", "coarse", "--coarse-iterations", "1", "--num-workers", "0", "--val-every", "0"]
    result = cli(*base, "--steps", "1")
    assert result.exit_code == 0, result.output
    assert "trained coarse 1 steps" in result.stdout and "checkpoint" in result.stdout
    assert_user_error(cli(*base, "--steps", "2"), "is not empty; pass --resume")
    result = cli(*base, "--steps", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "(resumed at step 1)" in result.stdout
    assert read_checkpoint(out / "checkpoints" / "latest.pt").step == 2
    assert_user_error(cli(*base, "--steps", "3", "--resume", "--lr", "0.5"), "other settings (lr=0.0001)")


def test_train_into_an_unwritable_out_is_one_error_line(read_only_dir, dataset, model_file):
    result = cli("train", "--data", str(dataset), "--model", model_file, "--out", str(read_only_dir),
                 "--batch-size", "8", "--steps", "1")
    assert_user_error(result, "is not writable (Read-only file system)")


def test_cli_errors(tmp_path, dataset, model_file, coarse_run):
    run, _ = coarse_run
    base = ["train", "--data", str(dataset), "--model", model_file, "--batch-size", "8"]
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert_user_error(cli(*base, "--out", str(junk)), "is not empty; choose a new or empty directory")
    assert_user_error(cli(*base, "--out", str(junk), "--resume"), "holds no synthface training run")
    assert_user_error(cli(*base, "--out", str(tmp_path / "f"), "--stage", "fine"), "--coarse-checkpoint")
    assert_user_error(cli("train", "--data", str(dataset), "--out", str(tmp_path / "m")), "another morphable model")
    bundled = tmp_path / "bundled-data"  # data of two models in one run: one clear line, no warning before it
    assert cli("generate", "--n", "2", "--size", str(SIZE), "--out", str(bundled)).exit_code == 0
    mixed = cli(*base, "--data", str(bundled), "--out", str(tmp_path / "mixed"))
    assert_user_error(mixed, "generated with 2 different morphable models")
    assert "Warning" not in mixed.stderr
    assert_user_error(cli(*base[:-1], "200", "--out", str(tmp_path / "b")), "fewer than --batch-size 200")
    assert_user_error(cli(*base, "--out", str(tmp_path / "x"), "--data", str(tmp_path / "nowhere")), "nowhere")
    assert not (tmp_path / "f").exists() and not (tmp_path / "b").exists()

    # Checkpoints: foreign, truncated.
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    assert_user_error(cli(*base, "--out", str(tmp_path / "g"), "--stage", "fine", "--coarse-checkpoint",
                          str(foreign)), f"{foreign}: not a synthface checkpoint")
    # A real checkpoint with a damaged normalizer or CoarseNet arguments: one line naming it, as evaluate says.
    raw = read_checkpoint(run / "checkpoints" / "latest.pt").to_dict()
    other = tmp_path / "other-size.pt"
    torch.save({**raw, "image_size": 2 * SIZE}, other)
    assert_user_error(cli(*base, "--out", str(tmp_path / "s"), "--stage", "fine", "--coarse-checkpoint", str(other),
                          "--steps", "1"), f"was trained on {2 * SIZE} px images but --data holds {SIZE} px ones")
    for damage, fragment in (({"normalizer": {"mean": "x"}}, "malformed checkpoint"),
                             ({"coarse_args": {**raw["coarse_args"], "widths": [3]}}, "CoarseNet weights do not fit")):
        bad = tmp_path / "bad.pt"
        torch.save({**raw, **damage}, bad)
        assert_user_error(cli(*base, "--out", str(tmp_path / "h"), "--stage", "fine", "--coarse-checkpoint", str(bad),
                              "--steps", "1"), f"{bad}: {fragment}")
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    latest = copy / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"latest\.pt: not a readable synthface checkpoint"):
        read_checkpoint(latest)
    stored = TrainConfig(stage="all", steps=2, checkpoint_every=1, val_every=1, **TINY)
    with pytest.raises(CheckpointError, match=str(latest)):
        train(dataset, copy, stored, model=load_model(model_file), resume=True)


def test_corrupt_shard_is_one_error_line(tmp_path, dataset, model_file):
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    shard = bad / "shard-000001.h5"  # not the first: its damage shows only when a DataLoader worker reads it
    with h5py.File(shard, "r") as f:  # every image chunk
        offsets = [f["image"].id.get_chunk_info(i).byte_offset for i in range(f["image"].id.get_num_chunks())]
    with open(shard, "r+b") as f:
        for off in offsets:
            f.seek(off)
            f.write(b"\xff" * 64)
    result = cli("train", "--data", str(bad), "--out", str(tmp_path / "run"), "--model", model_file,
                 "--batch-size", "8", "--num-workers", "1", "--steps", "1")
    assert_user_error(result, f"{shard}: cannot read 'image'")
    truncated = tmp_path / "truncated"
    shutil.copytree(dataset, truncated)
    with open(truncated / "shard-000001.h5", "r+b") as f:
        f.truncate(2000)
    result = cli("train", "--data", str(truncated), "--out", str(tmp_path / "run2"), "--model", model_file)
    assert_user_error(result, "shard-000001.h5")


@pytest.mark.slow
def test_kill_9_during_training_then_resume_matches_a_straight_run(tmp_path, dataset, model_file):
    """SIGKILL the trainer right after a checkpoint lands; --resume must end where a straight run ends."""
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent(f"""
        import sys, torch
        from synthface import load_model
        from synthface.train import TrainConfig, train
        torch.use_deterministic_algorithms(True)
        config = TrainConfig(stage="coarse", steps=10, checkpoint_every=1, val_every=0, **{TINY!r})
        train([sys.argv[1]], sys.argv[2], config, model=load_model(sys.argv[3]), resume=sys.argv[4] == "1")
    """)

    def start(out: Path, resume: bool) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", script, str(dataset), str(out), model_file, str(int(resume))])

    straight = tmp_path / "straight"
    assert start(straight, False).wait(timeout=300) == 0
    run = tmp_path / "run"
    proc = start(run, False)
    third = run / "checkpoints" / "step-0000003.pt"
    deadline = time.monotonic() + 240
    while not third.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    assert proc.wait() == -9, "the run ended before it could be killed"
    # Whole, though the process died; step-3 is written before latest.pt, so latest may still be step 2.
    killed_at = read_checkpoint(run / "checkpoints" / "latest.pt").step
    assert 2 <= killed_at < 10
    assert start(run, True).wait(timeout=300) == 0
    a = read_checkpoint(straight / "checkpoints" / "latest.pt")
    b = read_checkpoint(run / "checkpoints" / "latest.pt")
    assert a.step == b.step == 10
    assert all(torch.equal(v, b.coarse[k]) for k, v in a.coarse.items())
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporaries


# ---------------------------------------------------------------- real photos for the fine stage

@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Four photos of one face (skimage's public-domain astronaut: as is, mirrored, two crops), a picture
    without a face, and a file that is no photo."""
    from PIL import Image
    from skimage import data as skimage_data

    folder = tmp_path_factory.mktemp("photos")
    face = skimage_data.astronaut()
    (folder / "sub").mkdir()
    Image.fromarray(face).save(folder / "a.jpg", quality=92)
    Image.fromarray(face[:, ::-1]).save(folder / "sub" / "b.png")
    Image.fromarray(face[:400, 50:450]).save(folder / "c.PNG")
    Image.fromarray(face[20:, :480]).save(folder / "d.jpeg", quality=92)
    noise = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_photo_dataset_crops_detected_faces(photos, tmp_path):
    from synthface.photo import crop_square, detect_face, read_image
    from synthface.photos import PhotoDataset

    ds = PhotoDataset(photos, SIZE)
    assert [p.name for p in ds.paths] == ["a.jpg", "c.PNG", "d.jpeg", "b.png"]  # sorted by path: sub/ last
    assert [p.name for p, _ in ds.skipped] == ["noise.png"] and "no face found" in ds.skipped[0][1]
    item = ds[3]
    b = read_image(photos / "sub" / "b.png")
    crop = crop_square(b, detect_face(b), SIZE)
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"].numpy(), crop.image.transpose(2, 0, 1) / 255.0, atol=1e-7)
    np.testing.assert_array_equal(item["intrinsics"].numpy(), crop.intrinsics)
    # the training data's framing: a wider face fraction is a tighter crop (a longer focal length)
    tight = PhotoDataset(photos, SIZE, fraction=0.9)[3]["intrinsics"].numpy()
    assert tight[0, 0] == pytest.approx(crop.intrinsics[0, 0] * 0.9 / 0.75, rel=1e-3)
    assert int(item["index"]) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(photos / "noise.png", empty)
    with pytest.raises(ConfigError, match="no face found in any of its 1 photos"):
        PhotoDataset(empty, SIZE)
    with pytest.raises(ConfigError, match="not a directory"):
        PhotoDataset(photos / "a.jpg", SIZE)
    # a header claiming 50000 × 50000 pixels is left out (with why) before decoding; the rest trains
    bombed = tmp_path / "bombed"
    shutil.copytree(photos, bombed)
    (bombed / "bomb.png").write_bytes(header_bomb())
    ds = PhotoDataset(bombed, SIZE)
    assert len(ds) == 4 and dict((p.name, why) for p, why in ds.skipped)["bomb.png"].endswith(
        "2500000000 pixels is more than the 100,000,000 synthface decodes; downscale the photo")


def test_fine_stage_trains_on_real_photos(tmp_path, coarse_run, dataset, model, photos):
    """The photos drive FineNet's SfS gradient: photos only, the same photos twice give the same
    weights, other photos other weights; mixed batches still report the shard depth metric."""
    given = coarse_run[0] / "checkpoints" / "step-0000002.pt"

    def fine_weights(folder: Path, fraction: float, name: str) -> tuple[dict, dict]:
        config = TrainConfig(stage="fine", steps=2, val_every=0, real_images=str(folder), real_fraction=fraction,
                             **{**TINY, "batch_size": 8 if fraction < 1 else 4})
        summary = train(dataset, tmp_path / name, config, model=model, coarse_checkpoint=given)
        return summary, read_checkpoint(tmp_path / name / "checkpoints" / "latest.pt").fine

    summary, mixed = fine_weights(photos, 0.5, "mixed")
    assert summary["real_images"] == {"photos": 4, "skipped": 1, "detector": "dlib"}
    train_metrics = summary["stages"]["fine"]["train"]
    assert np.isfinite(train_metrics["loss"]) and "depth_mm" in train_metrics
    only, first = fine_weights(photos, 1.0, "only")
    assert "depth_mm" not in only["stages"]["fine"]["train"]  # no shard sample in the batch
    _, again = fine_weights(photos, 1.0, "again")
    assert all(torch.equal(v, again[k]) for k, v in first.items())
    darker = tmp_path / "darker"
    shutil.copytree(photos, darker)
    from PIL import Image

    for p in [darker / "a.jpg", darker / "c.PNG", darker / "d.jpeg", darker / "sub" / "b.png"]:
        with Image.open(p) as im:
            dim = (np.asarray(im.convert("RGB"), np.float32) * 0.6).astype(np.uint8)
        Image.fromarray(dim).save(p)
    _, other = fine_weights(darker, 1.0, "darker-run")
    assert not all(torch.equal(v, other[k]) for k, v in first.items())
    assert not all(torch.equal(v, mixed[k]) for k, v in first.items())


def test_real_images_errors(tmp_path, dataset, model_file, coarse_run, photos):
    base = ["train", "--data", str(dataset), "--model", model_file, "--batch-size", "8", "--num-workers", "0"]
    given = str(coarse_run[0] / "checkpoints" / "step-0000002.pt")
    assert_user_error(cli(*base, "--out", str(tmp_path / "a"), "--stage", "coarse", "--real-images", str(photos)),
                      "--real-images feeds the fine stage")
    assert_user_error(cli(*base, "--out", str(tmp_path / "b"), "--stage", "fine", "--coarse-checkpoint", given,
                          "--real-images", str(tmp_path / "nowhere")), "not a directory")
    assert_user_error(cli(*base, "--out", str(tmp_path / "c"), "--stage", "fine", "--coarse-checkpoint", given,
                          "--real-images", str(photos), "--real-fraction", "1"),
                      "4 photos with a face, fewer than the 8 per batch")
    assert not any((tmp_path / n).exists() for n in "abc")


def test_set_overrides_any_training_setting(tmp_path, dataset, model_file):
    config = TrainConfig().with_overrides({"coarse_norm": "batch", "shape_weight": 1, "fine_widths": [4, 8]})
    assert (config.coarse_norm, config.shape_weight, config.fine_widths) == ("batch", 1.0, (4, 8))
    assert isinstance(config.shape_weight, float)
    base = ["train", "--data", str(dataset), "--model", model_file, "--out", str(tmp_path / "r")]
    assert_user_error(cli(*base, "--set", "colour=red"), "--set colour: unknown training setting")
    assert_user_error(cli(*base, "--set", "steps=many"), "--set steps='many': expected a int like 10000")
    assert_user_error(cli(*base, "--set", "shape_weight=-1"), "shape_weight must be >= 0")
    assert_user_error(cli(*base, "--set", "coarse_norm=layer"), "coarse_norm must be group or batch")
    assert_user_error(cli(*base, "--set", "sfs_margin=-1"), "sfs_margin and sfs_albedo_tolerance must be >= 0")
    assert_user_error(cli(*base, "--set", "degrade=1"), "--set degrade=1: expected a bool like False")
    assert TrainConfig().with_overrides({"degrade": True}).degrade is True
    options = TrainConfig().with_overrides({"sfs_margin": 3, "sfs_albedo_tolerance": 0}).sfs_options
    assert (options["margin"], options["albedo_tolerance"]) == (3, None)  # 0: albedo edges kept
    assert not (tmp_path / "r").exists()  # a rejected setting writes nothing, not even the run folder
    result = cli(*base, "--stage", "coarse", "--steps", "1", "--batch-size", "4", "--num-workers", "0",
                 "--coarse-iterations", "1", "--set", "coarse_norm=batch", "--set", "shape_weight=0.5",
                 "--set", "degrade=true")
    assert result.exit_code == 0, result.output
    stored = read_checkpoint(tmp_path / "r" / "checkpoints" / "latest.pt")
    assert stored.coarse_args["norm"] == "batch" and stored.train_config["shape_weight"] == 0.5


def test_cosine_schedule_decays_to_a_hundredth():
    from synthface.train_config import learning_rate

    config = TrainConfig(lr=1e-3, steps=100, lr_schedule="cosine")
    rates = [learning_rate(config, s) for s in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[100] == pytest.approx(1e-5) and rates[50] == pytest.approx(5.05e-4)
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert learning_rate(TrainConfig(lr=1e-3, steps=100), 77) == 1e-3
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="step")


def test_vertex_distance_ignores_a_shift_along_the_optical_axis(model):
    """The geometric term is measured like the depth error: a pure z shift costs nothing, x/y and shape do."""
    from synthface.losses import vertex_distance
    from synthface.targets import POSE_CODE_FIELDS

    sizes = (model.n_identity, model.n_expression, 6)
    norm = ParameterNormalizer(("identity", "expression", "pose"), sizes, np.zeros(sum(sizes)), np.ones(sum(sizes)))
    k = torch.tensor([[[500.0, 0, 32], [0, 500, 32], [0, 0, 1]]], dtype=torch.float64)
    target = torch.zeros(1, sum(sizes), dtype=torch.float64)
    target[0, -1] = np.log(600 / 500)  # tz = 600 mm on the optical axis (x/z = y/z = 0)
    farther = target.clone()
    farther[0, -1] = np.log(700 / 500)
    assert POSE_CODE_FIELDS[-1] == "log_z_over_f"
    assert float(vertex_distance(model, norm, farther, target, k)) < 1e-4
    aside = target.clone()
    aside[0, -3] = 10 / 600  # 10 mm to the side
    assert float(vertex_distance(model, norm, aside, target, k)) == pytest.approx(10.0, rel=1e-4)
    turned = target.clone()
    turned[0, sum(sizes) - 6] = 0.3  # yaw
    assert float(vertex_distance(model, norm, turned, target, k)) > 1.0


def test_landmark_error_is_the_shards_landmark_offset_in_image_sides(dataset, model):
    """The true parameters reproject onto the shard's landmarks; a shift of x/z moves every visible one
    by f·x/z pixels; hidden ones do not count; the gradient reaches the estimate."""
    from synthface.data import ShardDataset
    from synthface.geometry import camera_vertices
    from synthface.losses import landmark_error

    ds = ShardDataset(dataset, split="all", fields=("params", "intrinsics", "landmarks", "landmarks_visible"))
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in ("params", "intrinsics", "landmarks",
                                                                     "landmarks_visible")}
    norm = ds.normalizer
    k = batch["intrinsics"].double()
    xy, visible = batch["landmarks"].double(), batch["landmarks_visible"]
    target = batch["params"].double()
    assert float(landmark_error(model, norm, target, k, xy, visible)) < 1e-4
    column = norm.slices["pose"].start + 3  # x / z
    aside = target.clone().requires_grad_(True)
    shift = torch.zeros_like(target)
    shift[:, column] = 0.01 / float(norm.std[column])  # x/z + 0.01: f · 0.01 pixels
    error = landmark_error(model, norm, aside + shift, k, xy, visible)
    params = norm.decode(target, k)
    z = camera_vertices(model, params)[:, list(model.landmark_indices), 2]  # nearer points move more
    moved = k[:, 0, 0, None] * 0.01 * params["pose"][:, 5, None] / z / (2 * k[:, 0, 2, None])
    assert float(error.detach()) == pytest.approx(float(moved[visible].mean()), rel=1e-3)
    error.backward()
    assert aside.grad is not None and aside.grad[:, column].abs().sum() > 0
    hidden = torch.zeros_like(visible)
    assert float(landmark_error(model, norm, target + shift, k, xy, hidden)) == 0.0


@pytest.mark.slow
def test_coarse_net_learns_the_pose_from_images(tmp_path, bundled_model):
    """Not just finite losses: a short run on the bundled model must read the pose from the image,
    well below the mean pose's error on held-out faces (the recipe's effect, small and fast)."""
    from synthface.evaluate import evaluate

    data = tmp_path / "d"
    make_dataset(data, bundled_model, n=2048, seed=3, shard_size=512, size=SIZE, faces_per_draw=64)
    config = TrainConfig(stage="coarse", steps=400, batch_size=16, lr=1e-3, lr_schedule="cosine", coarse_iterations=1,
                         coarse_widths=(16, 32, 64), coarse_blocks=1, coarse_hidden=128, coarse_norm="batch",
                         shape_weight=0.05, num_workers=0, threads=2, val_every=0, val_batches=1, val_fraction=0.1,
                         faces_per_draw=64)
    train(data, tmp_path / "run", config, model=bundled_model)
    result = evaluate(data, load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt"), bundled_model,
                      split="val")
    mean_face, coarse = (result["parameter_error"][k]["blocks"] for k in ("mean_face", "coarse"))
    depth = {k: v["mean"] for k, v in result["depth_error_percent"].items()}
    # Measured here: rotation 0.71x and depth 0.83x the mean face's; a net that learns nothing stays at ~1x.
    assert coarse["rotation_deg"] < 0.8 * mean_face["rotation_deg"], (coarse, mean_face)
    assert depth["coarse"] < 0.9 * depth["mean_face"], depth


def test_a_second_run_on_the_same_out_is_refused(tmp_path, dataset, model_file):
    from synthface.shards import LOCK, run_lock

    out = tmp_path / "run"
    out.mkdir()
    base = ["train", "--data", str(dataset), "--model", model_file, "--out", str(out), "--batch-size", "4",
            "--stage", "coarse", "--steps", "1", "--coarse-iterations", "1", "--num-workers", "0", "--val-every", "0"]
    with run_lock(out, "train"):  # as if another train were writing there
        assert_user_error(cli(*base), f"{out} is in use by another synthface run (train, pid {os.getpid()} on ")
    assert sorted(p.name for p in out.iterdir()) == []
    (out / LOCK).write_text("stale: its process died\n")  # a killed run's lock file does not block
    result = cli(*base)
    assert result.exit_code == 0, result.output
    assert not (out / LOCK).exists() and (out / "run.json").is_file()
    missing = tmp_path / "never"
    assert_user_error(cli("train", "--data", str(dataset), "--model", model_file, "--out", str(missing),
                          "--batch-size", "999"), "fewer than --batch-size 999")
    assert not missing.exists()  # refused before writing: the directory it created is gone again


class _DiesInAWorker:
    """A dataset whose reads kill the process reading them when that is a DataLoader worker."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"x": torch.zeros(1)}


def test_a_killed_data_loading_worker_is_one_error():
    from synthface.batches import loader

    with pytest.raises(SynthfaceError, match=r"a data-loading worker process died \(DataLoader worker .*\); free"):
        next(loader(_DiesInAWorker(), [[0, 1], [2, 3]], 1, False))  # type: ignore[arg-type]
