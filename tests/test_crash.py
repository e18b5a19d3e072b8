"""Crash safety: kill -9 at chosen points, then --resume gives the uninterrupted dataset; locking."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from synthface.shards import LOCK, run_lock

from .helpers import SIZE, assert_user_error, cli, gen, load_arrays

ARGS = ["--n", "10", "--size", str(SIZE), "--shard-size", "4", "--faces-per-draw", "2", "--seed", "6"]


DRIVER = Path(__file__).with_name("crash_driver.py")


def run_cli(out, model_file, *extra: str, crash: str | None = None) -> subprocess.CompletedProcess:
    """``synthface generate`` in a subprocess; ``crash``: kill it -9 at that event (see crash_driver.py)."""
    command = [sys.executable, str(DRIVER), crash] if crash else [sys.executable, "-m", "synthface", "generate"]
    return subprocess.run([*command, "--out", str(out), "--model", model_file, *ARGS, *extra],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_file):
    out = tmp_path_factory.mktemp("ref") / "d"
    gen(out, model_file, *ARGS[2:], n=10)
    return out


@pytest.mark.parametrize("crash", ["batch:3", "commit:1", "commit:3", "manifest"])  # mid-shard, between, last, manifest
def test_kill_9_then_resume_gives_the_uninterrupted_dataset(crash, tmp_path, model_file, reference):
    out = tmp_path / "d"
    killed = run_cli(out, model_file, crash=crash)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "manifest.json").exists()
    for shard in out.glob("shard-*.h5"):  # whatever exists under a final name is complete
        with h5py.File(shard, "r") as f:
            assert f["image"].shape[0] == f.attrs["count"] and f["index"][-1] == f.attrs["first_index"] + \
                f.attrs["count"] - 1
    resumed = run_cli(out, model_file, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "manifest.json").read_text() == (reference / "manifest.json").read_text()
    a, b = load_arrays(reference), load_arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *sorted(p.name for p in out.glob("shard-*"))]


def test_a_second_run_on_the_same_dir_is_refused(tmp_path, model_file):
    out = tmp_path / "d"
    out.mkdir()
    with run_lock(out, "generate"):  # as if another generate were running there
        assert (out / LOCK).read_text().startswith(f"generate, pid {os.getpid()} on ")
        result = cli("generate", "--out", str(out), "--model", model_file, *ARGS)
        assert_user_error(result, "is in use by another synthface run (generate, pid")
    assert not (out / LOCK).exists()
    assert cli("generate", "--out", str(out), "--model", model_file, *ARGS).exit_code == 0


def test_a_stale_lock_from_a_killed_run_is_taken_over(tmp_path, model_file):
    out = tmp_path / "d"
    killed = run_cli(out, model_file, crash="batch:2")
    assert killed.returncode == -signal.SIGKILL
    assert (out / LOCK).exists()  # left behind by kill -9, but nobody holds it
    assert run_cli(out, model_file, "--resume").returncode == 0
    assert not (out / LOCK).exists()


def test_refused_runs_leave_nothing(tmp_path, model_file):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "mine.txt").write_text("x")
    assert_user_error(cli("generate", "--out", str(junk), "--model", model_file, *ARGS), "is not empty")
    assert [p.name for p in junk.iterdir()] == ["mine.txt"]
    fresh = tmp_path / "fresh"
    assert_user_error(cli("generate", "--out", str(fresh), "--model", model_file, *ARGS, "--resume"),
                      "holds no interrupted synthface run")
    assert not fresh.exists()


def _fail_after(original, count: int, error: OSError, applies=lambda *a, **k: True):
    """Wrap ``original`` to raise ``error`` from its ``count``-th applicable call on (a full/read-only disk)."""
    calls = {"n": 0}

    def wrapper(self, *args, **kwargs):
        if applies(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] >= count:
                raise error
        return original(self, *args, **kwargs)

    return wrapper


@pytest.mark.parametrize(("where", "fragment"), [("write", "No space left on device; check free space"),
                                                 ("create", "Permission denied")])
def test_disk_full_or_permission_error_is_clean_and_resumable(where, fragment, tmp_path, model_file, reference,
                                                              monkeypatch):
    if where == "write":  # the 7th dataset write (inside the first shard's second batch) finds the disk full
        monkeypatch.setattr(h5py.Dataset, "__setitem__",
                            _fail_after(h5py.Dataset.__setitem__, 7, OSError(28, "No space left on device")))
    else:  # the second shard cannot be created
        monkeypatch.setattr(h5py.File, "__init__", _fail_after(h5py.File.__init__, 2, PermissionError(
            13, "Permission denied"), applies=lambda *a, **k: a[1:2] == ("w",)))
    out = tmp_path / "d"
    result = cli("generate", "--out", str(out), "--model", model_file, *ARGS)
    assert_user_error(result, fragment)
    assert "shard-00000" in result.stderr.splitlines()[-1]  # names the shard
    monkeypatch.undo()
    assert not list(out.glob(".shard-*")), "the failed shard's temporary file was removed"
    assert not (out / "manifest.json").exists()
    assert cli("generate", "--out", str(out), "--model", model_file, *ARGS, "--resume").exit_code == 0
    a, b = load_arrays(reference), load_arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _flip_middle_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped byte", "shard of another seed"])
def test_resume_rewrites_damaged_or_foreign_shards(damage, tmp_path, model_file, reference):
    """--resume of a finished dataset keeps only shards that are exactly the planned ones (sha256 in the
    manifest, seed, model, config, index range) and rewrites the rest; verify names them before."""
    out = tmp_path / "d"
    shutil.copytree(reference, out)
    if damage == "flipped byte":
        _flip_middle_byte(out / "shard-000001.h5")
        expected = "sha256 differs"
    else:
        other = tmp_path / "other"
        gen(other, model_file, *[a if a != "6" else "1" for a in ARGS[2:]], n=10)  # --seed 1
        shutil.copy(other / "shard-000001.h5", out / "shard-000001.h5")
        expected = "attribute seed=1 but the manifest says 6"
    report = cli("verify", str(out))
    assert report.exit_code != 0 and expected in report.output, report.output
    assert cli("generate", "--out", str(out), "--model", model_file, *ARGS, "--resume").exit_code == 0
    assert cli("verify", str(out)).exit_code == 0
    assert (out / "manifest.json").read_text() == (reference / "manifest.json").read_text()
    a, b = load_arrays(reference), load_arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_real_full_disk_is_one_error_then_resume_finishes(small_filesystem, model_file):
    """No tracebacks, no crash, no temporaries when the disk fills up; after space is freed (the tmpfs
    grown), --resume finishes the dataset identical to an uninterrupted run."""
    out = small_filesystem / "d"
    bigger = ("--size", "64", "--n", "48")  # ~0.7 MB: more than the 400 KB there is
    refused = run_cli(out, model_file, *bigger)  # the estimate sees it coming ...
    assert refused.returncode == 1 and "pass --force" in refused.stderr and not out.exists()
    full = run_cli(out, model_file, *bigger, "--force")  # ... past it, the disk fills up for real
    assert full.returncode == 1, full.stderr
    lines = full.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cannot finish shard") and "No space left on device" in lines[-1]
    assert "Traceback" not in full.stderr and sum(line.startswith("error:") for line in lines) == 1
    assert not list(out.glob(".*.tmp")) and not (out / "manifest.json").exists()
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_filesystem)], check=True)
    resumed = run_cli(out, model_file, *bigger, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    straight = small_filesystem.parent / "straight"
    assert run_cli(straight, model_file, *bigger).returncode == 0
    assert (out / "manifest.json").read_text() == (straight / "manifest.json").read_text()
    a, b = load_arrays(straight), load_arrays(out)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_an_unwritable_out_is_one_error_line(read_only_dir, model_file):
    result = cli("generate", "--out", str(read_only_dir), "--model", model_file, *ARGS)
    assert_user_error(result, "is not writable (Read-only file system)")


def test_a_dead_worker_is_one_error_line_then_resume_finishes(tmp_path, model_file, reference):
    """kill -9 of pool workers (as the out-of-memory killer would): no hang, one line naming the
    shard, and --resume gives the uninterrupted dataset."""
    out = tmp_path / "d"
    died = run_cli(out, model_file, "--workers", "2", crash="batch:1")  # each worker dies after its first batch
    assert died.returncode == 1, died.stderr
    last = died.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a worker process died while writing shard-00000") and "--resume" in last
    assert "Traceback" not in died.stderr
    assert run_cli(out, model_file, "--workers", "2", "--resume").returncode == 0
    assert (out / "manifest.json").read_text() == (reference / "manifest.json").read_text()


@pytest.mark.slow
def test_sigterm_stops_the_whole_process_tree(tmp_path, model_file):
    """SIGTERM to generate --workers 2 ends it as Ctrl-C does: one line, exit 143, and no worker left
    writing after it (the process group is empty); --resume finishes the run."""
    import time

    out = tmp_path / "d"
    command = [sys.executable, "-m", "synthface", "generate", "--out", str(out), "--model", model_file, *ARGS,
               "--n", "400", "--workers", "2"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and not list(out.glob("shard-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "error: terminated; nothing was left half-written"
    assert "Traceback" not in err
    for _ in range(50):  # the workers were terminated with the parent
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("worker processes outlived the terminated run")
    assert not (out / "manifest.json").exists()
    assert run_cli(out, model_file, "--n", "400", "--workers", "2", "--resume").returncode == 0
