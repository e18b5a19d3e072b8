"""generate: shards exactly as README's shard table, determinism across workers/shard sizes, resume, refusals."""

from __future__ import annotations

import json

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import pytest

from synthface import load_config, load_model, sample_params
from synthface.generate import PLAN, GenerateJob, generate
from synthface.params import (
    BACKGROUND_FIELDS,
    FACIAL_HAIR_FIELDS,
    HAIR_FIELDS,
    MAX_OCCLUDERS,
    MAX_SHAPES,
    OCCLUDER_FIELDS,
    SHAPE_FIELDS,
)
from synthface.resources import file_sha256

from .helpers import SIZE, assert_user_error, cli, gen, load_arrays


def test_shards_follow_the_design_table(tmp_path, model_file):
    out = tmp_path / "d"
    result = gen(out, model_file, "--shard-size", "4", "--seed", "3", "--extras", "normals")
    assert "wrote 10 samples in 3 shards" in result.stdout
    model = load_model(model_file)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "synthface-dataset" and manifest["n"] == 10 and manifest["seed"] == 3
    assert manifest["model"]["sha256"] == model.sha256 and manifest["image_size"] == SIZE
    assert [(s["file"], s["first_index"], s["count"]) for s in manifest["shards"]] == [
        ("shard-000000.h5", 0, 4), ("shard-000001.h5", 4, 4), ("shard-000002.h5", 8, 2)]
    expected = {
        "image": ((SIZE, SIZE, 3), np.uint8), "depth": ((SIZE, SIZE), np.float32),
        "mask": ((SIZE, SIZE), np.uint8), "params/identity": ((model.n_identity,), np.float32),
        "params/expression": ((model.n_expression,), np.float32), "params/albedo": ((model.n_albedo,), np.float32),
        "params/pose": ((6,), np.float32), "params/light": ((9, 3), np.float32),
        "camera/intrinsics": ((3, 3), np.float32), "landmarks/xy": ((68, 2), np.float32),
        "landmarks/visible": ((68,), np.bool_), "index": ((), np.int64), "normals": ((SIZE, SIZE, 3), np.float32),
        "params/material": ((3,), np.float32), "params/background": ((len(BACKGROUND_FIELDS),), np.float32),
        "params/background_shapes": ((MAX_SHAPES, len(SHAPE_FIELDS)), np.float32),
        "params/background_sha256": ((), np.dtype("S64")), "segmentation": ((SIZE, SIZE), np.uint8),
        "params/occluders": ((MAX_OCCLUDERS, len(OCCLUDER_FIELDS)), np.float32),
        "params/hair": ((len(HAIR_FIELDS),), np.float32),
        "params/facial_hair": ((len(FACIAL_HAIR_FIELDS),), np.float32),
    }
    for shard in manifest["shards"]:
        path = out / shard["file"]
        assert file_sha256(path) == shard["sha256"]
        with h5py.File(path, "r") as f:
            n = shard["count"]
            for name, (shape, dtype) in expected.items():
                assert f[name].shape == (n, *shape), name
                assert f[name].dtype == dtype, name
            assert json.loads(f["segmentation"].attrs["classes"])[:2] == ["background", "face"]
            np.testing.assert_array_equal(f["segmentation"][()] > 0, f["mask"][()] > 0)  # a face-only model
            for name in ("image", "depth", "mask", "segmentation"):
                assert f[name].chunks == (1, *f[name].shape[1:]), name  # one sample per chunk
                assert f[name].compression is not None or f[name]._filters, name  # compressed
            a = dict(f.attrs)
            assert a["format"] == "synthface-shard" and a["format_version"] == 4
            assert a["first_index"] == shard["first_index"] and a["count"] == n and a["seed"] == 3
            assert a["model"] == model.name and a["model_sha256"] == model.sha256
            assert json.loads(a["config"])["image_size"] == SIZE and a["synthface_version"]
            np.testing.assert_array_equal(f["index"][()], np.arange(a["first_index"], a["first_index"] + n))
            assert set(np.unique(f["mask"][()])) <= {0, 1}
            assert (f["depth"][()][f["mask"][()] == 0] == 0).all() and (f["depth"][()][f["mask"][()] == 1] > 0).all()
    assert not list(out.glob(".*")), "no temporary or plan files remain"
    # The stored parameters are exactly the sampler's.
    arrays = load_arrays(out)
    want = sample_params(model, seed=3, indices=range(10), config=load_config(overrides={"image_size": SIZE}))
    np.testing.assert_array_equal(arrays["params/pose"], want["pose"])
    np.testing.assert_array_equal(arrays["camera/intrinsics"], want["intrinsics"])


def test_same_seed_same_arrays_whatever_workers_or_shard_size(tmp_path, model_file):
    gen(tmp_path / "a", model_file, "--shard-size", "10", "--seed", "5")
    gen(tmp_path / "b", model_file, "--shard-size", "3", "--workers", "2", "--seed", "5")
    a, b = load_arrays(tmp_path / "a"), load_arrays(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_dataset(tmp_path, model_file):
    model = load_model(model_file)
    job = GenerateJob(n=11, seed=9, shard_size=3, config=load_config(overrides={"image_size": SIZE}),
                      faces_per_draw=4)
    generate(tmp_path / "whole", job, model=model, device="cpu")
    done = []

    def stop_midway(k: int) -> None:
        done.append(k)
        if sum(done) >= 5:  # inside the second shard
            raise Interrupt

    with pytest.raises(Interrupt):
        generate(tmp_path / "cut", job, model=model, device="cpu", progress=stop_midway)
    cut = tmp_path / "cut"
    assert (cut / PLAN).exists() and not (cut / "manifest.json").exists()
    assert sorted(p.name for p in cut.glob("shard-*.h5")) == ["shard-000000.h5"]  # only complete shards
    assert not list(cut.glob(".shard-*"))  # the interrupted shard's temporary file was removed
    result = cli("generate", "--n", "11", "--out", str(cut), "--model", model_file, "--resume")
    assert result.exit_code == 0, result.output
    assert (cut / "manifest.json").read_text() == (tmp_path / "whole" / "manifest.json").read_text()
    a, b = load_arrays(tmp_path / "whole"), load_arrays(cut)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_refusals(tmp_path, model_file):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    args = ["--n", "2", "--model", model_file, "--size", str(SIZE)]
    assert_user_error(cli("generate", *args, "--out", str(junk)), "is not empty; choose a new or empty directory")
    assert_user_error(cli("generate", *args, "--out", str(junk), "--resume"), "holds no interrupted synthface run")
    assert_user_error(cli("generate", *args, "--out", str(junk / "notes.txt")), "is a file")
    done = tmp_path / "done"
    gen(done, model_file, n=2)
    assert_user_error(cli("generate", *args, "--out", str(done)), "pass --resume")
    # --resume takes the run's recorded settings; flags that say otherwise are refused, not ignored
    resume = ["generate", "--model", model_file, "--out", str(done), "--resume"]
    assert_user_error(cli(*resume, "--n", "3"), "was started with --n 2 (given: --n 3)")
    assert_user_error(cli(*resume, "--n", "2", "--seed", "5", "--size", "64"),
                      f"was started with --seed 0, --size {SIZE} (given: --seed 5, --size 64)")
    assert cli(*resume, "--n", "2", "--seed", "0").exit_code == 0
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert_user_error(cli("generate", *args, "--out", str(loop)), "is a symbolic link to nothing (dangling or a loop)")
    # a run that has not written its manifest yet: the readers say so, and how to finish it
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / PLAN).write_text("{}")
    for command in ("info", "verify"):
        assert_user_error(cli(command, str(pending)), "still being generated, or an interrupted run")
    assert_user_error(cli("generate", "--n", "0", "--out", str(tmp_path / "x")), "Invalid value for '--n'")
    assert_user_error(cli("generate", "--n", "2", "--out", str(tmp_path / "x"), "--shard-size", "0"),
                      "Invalid value for '--shard-size'")
    assert_user_error(cli("generate", "--n", "2", "--out", str(tmp_path / "x"), "--device", "tpu"),
                      "Invalid value for '--device'")
    assert not (tmp_path / "x").exists()


def test_readme_reader_snippet_reads_sample_i(tmp_path, model_file, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "import h5py" in block)
    gen(tmp_path / "shards", model_file, "--shard-size", "8", n=8)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(snippet, scope)  # the documented snippet, as a user would paste it
    with h5py.File(tmp_path / "shards" / "shard-000000.h5", "r") as f:
        np.testing.assert_array_equal(scope["image"], f["image"][5])
        np.testing.assert_array_equal(scope["K"], f["camera/intrinsics"][5])


def test_shard_range_jobs_build_the_same_dataset(tmp_path, model_file):
    gen(tmp_path / "whole", model_file, "--shard-size", "3", "--seed", "4", n=11)
    parts = tmp_path / "parts"
    for span in ("2:3", "0:2"):  # any order; the job completing the last shard writes the manifest
        result = gen(parts, model_file, "--shard-size", "3", "--seed", "4", "--shard-range", span, n=11)
        assert "manifest is written by the job that completes the last shard" in result.stdout
        assert not (parts / "manifest.json").exists()
    assert "(6 samples)" in result.stdout
    assert_user_error(cli("generate", "--n", "11", "--out", str(parts), "--size", str(SIZE), "--model", model_file,
                          "--faces-per-draw", "4", "--shard-size", "3", "--seed", "5", "--shard-range", "2:4"),
                      "holds a run with other settings (seed)")
    assert_user_error(cli("generate", "--n", "11", "--out", str(parts), "--size", str(SIZE), "--model", model_file,
                          "--faces-per-draw", "4", "--shard-size", "3", "--seed", "4", "--shard-range", "3:9"),
                      "outside the run's 4 shards")
    assert_user_error(cli("generate", "--n", "11", "--out", str(parts), "--shard-range", "3:1"), "0 <= START < STOP")
    fresh = tmp_path / "fresh"  # a refused range leaves nothing behind (no plan file)
    assert_user_error(cli("generate", "--n", "11", "--out", str(fresh), "--size", str(SIZE), "--model", model_file,
                          "--shard-size", "3", "--shard-range", "3:9"), "outside the run's 4 shards")
    assert not fresh.exists() or not any(p.name != ".synthface.lock" for p in fresh.iterdir())
    result = gen(parts, model_file, "--shard-size", "3", "--seed", "4", "--shard-range", "3:4", n=11)
    assert "wrote 11 samples in 4 shards" in result.stdout
    assert (parts / "manifest.json").read_text() == (tmp_path / "whole" / "manifest.json").read_text()


@pytest.mark.slow
def test_ray_backend_gives_the_local_backends_arrays(tmp_path, model_file):
    pytest.importorskip("ray")
    gen(tmp_path / "local", model_file, "--shard-size", "4", "--seed", "2", n=10)
    result = gen(tmp_path / "ray", model_file, "--shard-size", "4", "--seed", "2", "--backend", "ray",
                 "--workers", "2", n=10)
    assert "wrote 10 samples in 3 shards" in result.stdout
    assert (tmp_path / "ray" / "manifest.json").read_text() == (tmp_path / "local" / "manifest.json").read_text()
    a, b = load_arrays(tmp_path / "local"), load_arrays(tmp_path / "ray")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_shard_plan_is_lazy_and_exact():
    """Shards are computed on access: a plan of 10^12 samples costs nothing; items as before."""
    for n, size in ((10, 4), (8, 4), (1, 1000), (1001, 1000)):
        plan = GenerateJob(n=n, shard_size=size).shards()
        want = [(f"shard-{k:06d}.h5", first, min(size, n - first)) for k, first in enumerate(range(0, n, size))]
        assert len(plan) == len(want) and list(plan) == want and plan[-1] == want[-1] and plan[1:] == want[1:]
    huge = GenerateJob(n=10**12).shards()
    assert len(huge) == 10**9 and huge[10**9 - 1] == ("shard-999999999.h5", 10**12 - 1000, 1000)
    with pytest.raises(IndexError):
        huge[10**9]


def test_a_dataset_larger_than_the_free_disk_is_refused(tmp_path, model_file):
    """Estimated before anything is written, with the figures; the estimate is an upper bound."""
    out = tmp_path / "d"
    result = cli("generate", "--n", "1000000000000", "--out", str(out), "--model", model_file)
    assert_user_error(result, "--n 1000000000000 at 200 px needs about 182 PB")
    assert "pass --force" in result.stderr and not out.exists()
    gen(out, model_file, "--shard-size", "4", n=8)
    job = GenerateJob(n=8, shard_size=4, config=load_config(overrides={"image_size": SIZE}), faces_per_draw=4)
    written = sum(p.stat().st_size for p in out.glob("shard-*.h5"))
    assert 0.2 * job.estimated_bytes() < written <= job.estimated_bytes()


def test_an_unreachable_ray_address_is_one_error_line(tmp_path, model_file):
    """Ray itself retries a dead address for minutes: it is probed first, before anything is written."""
    out = tmp_path / "d"
    result = cli("generate", "--n", "4", "--out", str(out), "--size", str(SIZE), "--model", model_file,
                 "--backend", "ray", "--ray-address", "127.0.0.1:1")
    assert_user_error(result, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert not out.exists()
    assert_user_error(cli("generate", "--n", "4", "--out", str(out), "--model", model_file, "--backend", "ray",
                          "--ray-address", "nonsense"), "expected HOST:PORT, ray://HOST:PORT or auto")
