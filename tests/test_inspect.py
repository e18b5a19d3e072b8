"""info / verify / preview / doctor: a person can inspect a dataset, and damage is found and named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .helpers import assert_user_error, cli, gen, load_arrays


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, model_file):
    out = tmp_path_factory.mktemp("ds") / "d"
    gen(out, model_file, "--shard-size", "4", n=10)
    return out


@pytest.fixture
def damaged(dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    return copy


def test_info(dataset):
    result = cli("info", str(dataset))
    assert result.exit_code == 0
    assert "samples     10" in result.stdout and "3 of up to 4 samples" in result.stdout
    assert "KiB/sample" in result.stdout


def test_verify_accepts_an_intact_dataset(dataset):
    result = cli("verify", str(dataset))
    assert result.exit_code == 0 and result.stdout.strip().endswith(": ok")


def test_verify_names_a_flipped_byte(damaged):
    path = damaged / "shard-000001.h5"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli("verify", str(damaged))
    assert "shard-000001.h5: sha256 differs" in result.stderr
    assert_user_error(result, "shard-000001.h5")


def test_verify_names_a_truncated_and_a_missing_shard(damaged):
    path = damaged / "shard-000000.h5"
    path.write_bytes(path.read_bytes()[:3000])
    (damaged / "shard-000002.h5").unlink()
    result = cli("verify", str(damaged))
    assert "shard-000000.h5: unreadable" in result.stderr and "shard-000002.h5: missing" in result.stderr
    assert_user_error(result, "shard-000000.h5, shard-000002.h5")


def test_verify_names_a_manifest_that_disagrees(damaged):
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["shards"][1]["count"] = 3
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", str(damaged))
    assert "shard-000001.h5: attribute count=4 but the manifest says 3" in result.stderr
    assert "manifest.json: shard-000002.h5 starts at 8, expected 7" in result.stderr
    assert_user_error(result, "manifest.json")


def test_info_names_a_truncated_or_missing_shard(damaged):
    path = damaged / "shard-000001.h5"
    path.write_bytes(path.read_bytes()[:2000])
    assert_user_error(cli("info", str(damaged)), "shard-000001.h5: not a readable HDF5 shard")
    path.unlink()
    assert_user_error(cli("info", str(damaged)), "shard-000001.h5: shard missing (listed in")


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "flipped chunk"])
def test_preview_names_a_damaged_shard(damaged, tmp_path, damage):
    """preview reads the first shards' pixels: a missing, 0-byte, truncated shard or a chunk whose
    checksum fails is one error line naming the file (it was an h5py traceback)."""
    path = damaged / "shard-000000.h5"
    data = bytearray(path.read_bytes())
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(bytes(data[:3000]))
    else:
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # inside the pixel chunks (Fletcher-32)
        path.write_bytes(bytes(data))
    out = tmp_path / "p.png"
    assert_user_error(cli("preview", str(damaged), "--out", str(out), "--count", "4"), "shard-000000.h5")
    assert not out.exists()


def test_verify_checks_every_dataset_of_the_layout(tmp_path, model_file):
    """verify expects the shard layout (shard_layout) of the run, extras included, with the model's
    coefficient counts agreeing across shards."""
    import h5py

    out = tmp_path / "d"
    gen(out, model_file, "--shard-size", "4", "--extras", "normals", n=8)
    assert cli("verify", str(out)).exit_code == 0
    with h5py.File(out / "shard-000001.h5", "r+") as f:
        del f["normals"]
        identity = f["params/identity"][()]
        del f["params/identity"]
        f["params/identity"] = np.zeros((len(identity), identity.shape[1] + 1), np.float32)
    report = cli("verify", str(out)).output
    assert "shard-000001.h5: dataset normals missing" in report
    k = identity.shape[1]
    assert f"dataset params/identity is (4, {k + 1}) float32, expected (4, {k})" in report


def test_verify_and_info_refuse_a_non_dataset(tmp_path):
    assert_user_error(cli("verify", str(tmp_path)), "no manifest")
    (tmp_path / "manifest.json").write_text("{broken")
    assert_user_error(cli("info", str(tmp_path)), "unreadable manifest")


def test_resume_redoes_deleted_shards(damaged, dataset, model_file):
    (damaged / "shard-000001.h5").unlink()
    result = cli("generate", "--n", "10", "--out", str(damaged), "--resume", "--model", model_file)
    assert result.exit_code == 0, result.output
    assert cli("verify", str(damaged)).exit_code == 0
    a, b = load_arrays(dataset), load_arrays(damaged)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_preview_writes_a_contact_sheet(dataset, tmp_path):
    out = tmp_path / "sheet.png"
    result = cli("preview", str(dataset), "--out", str(out), "--count", "6", "--columns", "3")
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[0] > 2 * 32 and sheet.shape[1] > 3 * 2 * 32
    assert len(np.unique(sheet.reshape(-1, 3), axis=0)) > 50  # real pictures, not a blank canvas
    assert not list(tmp_path.glob(".*.tmp"))


def test_preview_format_follows_the_name(dataset, tmp_path):
    """--out x.jpg writes JPEG bytes (not PNG bytes under a .jpg name); an unknown extension is one error line."""
    out = tmp_path / "sheet.jpg"
    assert cli("preview", str(dataset), "--out", str(out), "--count", "2").exit_code == 0
    assert out.read_bytes()[:3] == b"\xff\xd8\xff" and Image.open(out).format == "JPEG"
    assert_user_error(cli("preview", str(dataset), "--out", str(tmp_path / "sheet.xyz")), "unknown image type")
    assert not (tmp_path / "sheet.xyz").exists()


def test_outputs_written_into_special_files_leave_them_special(dataset, tmp_path):
    """An --out that is a FIFO or a device is written into, never renamed over (as root a rename would
    turn /dev/null into a regular file). The device test needs root (mknod) and skips without it."""
    import stat
    import threading

    from synthface.shards import atomic_write

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)  # never hangs the run
    reader.start()
    atomic_write(fifo, b"through the pipe")
    reader.join(timeout=10)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    for args in (("preview", str(dataset), "--out", str(null), "--count", "1"),
                 ("sample", "--n", "2", "--out", str(null))):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.stat(null).st_mode), args
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("record", [{}, [1, 2], "without job", "without model"])
def test_resume_on_a_malformed_manifest_is_one_error_line(damaged, model_file, record):
    """generate --resume reads the manifest's job and model: {}, a list, or one missing either is an
    error line naming the file (it was a traceback)."""
    path = damaged / "manifest.json"
    manifest = json.loads(path.read_text())
    if record == "without job":
        del manifest["job"]
    elif record == "without model":
        del manifest["model"]
    else:
        manifest = record
    path.write_text(json.dumps(manifest))
    result = cli("generate", "--n", "10", "--out", str(damaged), "--model", model_file, "--resume")
    assert_user_error(result, "not a synthface run record")


@pytest.mark.parametrize("command", ["info", "preview", "verify"])
def test_a_manifest_without_its_shard_list_is_one_error_line(damaged, tmp_path, command):
    path = damaged / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["shards"]
    path.write_text(json.dumps(manifest))
    args = ["--out", str(tmp_path / "p.png")] if command == "preview" else []
    assert_user_error(cli(command, str(damaged), *args), "shard list is missing or malformed")


def test_doctor_reports_the_renderer():
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    assert "GL renderer" in result.stdout and "rendering works" in result.stdout
    assert "face detector (reconstruct, evaluate --photos, --real-images): dlib" in result.stdout  # dev extras


def test_doctor_without_egl_says_how_to_fix():
    env = dict(os.environ, __EGL_VENDOR_LIBRARY_FILENAMES="/nonexistent/10_vendor.json")
    proc = subprocess.run([sys.executable, "-m", "synthface.cli", "doctor"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no usable OpenGL") and "apt-get install libegl1 libgl1-mesa-dri" in last
    assert "Traceback" not in proc.stderr


def test_format_1_datasets_verify_info_and_preview(damaged, tmp_path):
    """A dataset of shard format 1 (no segmentation, material or background shapes) is still intact."""
    import h5py

    from synthface.resources import file_sha256

    manifest = json.loads((damaged / "manifest.json").read_text())
    for entry in manifest["shards"]:
        path = damaged / entry["file"]
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 1
            for name in ("segmentation", "params/material", "params/background_shapes", "params/background_sha256",
                         "params/occluders", "params/hair", "params/facial_hair"):
                del f[name]
        entry["sha256"] = file_sha256(path)
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", str(damaged))
    assert result.exit_code == 0 and result.stdout.strip().endswith(": ok"), result.output
    assert cli("info", str(damaged)).exit_code == 0
    assert cli("preview", str(damaged), "--out", str(tmp_path / "v1.png"), "--count", "2").exit_code == 0
    with h5py.File(damaged / manifest["shards"][0]["file"], "r+") as f:  # a format 2 shard must have them all
        f.attrs["format_version"] = 2
        del f["params/clothes"]  # (but not what format 3 added)
    manifest["shards"][0]["sha256"] = file_sha256(damaged / manifest["shards"][0]["file"])
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    result = cli("verify", str(damaged))
    assert result.exit_code != 0 and "dataset segmentation missing" in result.output
    assert "params/clothes" not in result.output
