"""CLI: thin commands over the API; every user mistake is one ``error:`` line and a non-zero exit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthface import __version__, load_config, sample_params

from .helpers import assert_user_error
from .helpers import cli as run


def test_version_and_help():
    assert run("--version").stdout.strip() == f"synthface, version {__version__}"
    out = run("--help")
    assert out.exit_code == 0
    for cmd in ("sample", "model", "config"):
        assert cmd in out.stdout


def test_sample_prints_the_api_samples(model_file):
    result = run("sample", "--model", model_file, "--n", "3", "--first", "5", "--seed", "11", "--size", "64")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    from synthface import load_model

    want = sample_params(load_model(model_file), seed=11, indices=[5, 6, 7],
                         config=load_config(overrides={"image_size": 64}))
    assert [r["index"] for r in records] == [5, 6, 7]
    np.testing.assert_allclose([r["identity"] for r in records], want["identity"], rtol=1e-6)
    np.testing.assert_allclose([r["pose"]["yaw"] for r in records], want["pose"][:, 0], rtol=1e-6)
    np.testing.assert_allclose(records[0]["intrinsics"][0][2], 32.0)


def test_sample_to_npz_matches_json(model_file, tmp_path):
    out = tmp_path / "p.npz"
    result = run("sample", "--model", model_file, "--n", "4", "--out", str(out), "--yaw", "-5,5")
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        assert z["identity"].shape[0] == 4
        assert np.abs(np.degrees(z["pose"][:, 0])).max() <= 5
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_config_prints_a_loadable_template(tmp_path):
    result = run("config", "--size", "96", "--set", "light.tint=0.0")
    assert result.exit_code == 0
    path = tmp_path / "c.toml"
    path.write_text(result.stdout)
    cfg = load_config(path)
    assert cfg.image_size == 96 and cfg.light.tint == 0.0


def test_model_describes_the_file(model_file):
    result = run("model", "--model", model_file)
    assert result.exit_code == 0
    assert "test-sphere-blendshape" in result.stdout
    assert "5 (blendshape)" in result.stdout


@pytest.mark.parametrize(("args", "fragment"), [
    (["sample", "--n", "0"], "Invalid value for '--n'"),
    (["sample", "--seed", "-1"], "Invalid value for '--seed'"),
    (["sample", "--yaw", "abc"], "two comma-separated numbers"),
    (["sample", "--size", "8"], "image_size: 8 is outside"),
    (["sample", "--set", "pose.yew_deg=[0,1]"], "unknown config key pose.yew_deg"),
    (["sample", "--set", "nokey"], "expected KEY=VALUE"),
    (["sample", "--bogus"], "No such option"),
    (["nosuchcommand"], "No such command"),
    (["sample", "--model", "/nonexistent/model.mat"], "/nonexistent/model.mat: model file not found"),
    (["sample", "--config", "/nonexistent/c.toml"], "cannot read config /nonexistent/c.toml"),
    (["sample", "--model-format", "obj"], "Invalid value for '--model-format'"),
])
def test_user_errors_are_one_line(args, fragment, model_file):
    if "--model" not in args and args[0] == "sample":
        args = [*args, "--model", model_file]
    assert_user_error(run(*args), fragment)


def test_bad_model_files_are_one_line(tmp_path):
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"not a model at all")
    assert_user_error(run("model", "--model", str(junk)), "not a morphable-model file")
    assert_user_error(run("model", "--model", str(tmp_path)), "is a directory; see")


def test_unwritable_out_is_one_line(model_file, tmp_path):
    assert_user_error(run("sample", "--model", model_file, "--out", str(tmp_path / "no" / "p.npz")),
                      "cannot write")


def test_the_generator_commands_do_not_import_torch(tmp_path, model_file):
    """torch costs seconds to import: --help and the generator's commands on the CPU never load it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from synthface.cli import main\n"
        "runner = CliRunner()\n"
        "for args in sys.argv[1:]:\n"
        "    result = runner.invoke(main, args.split(), catch_exceptions=False)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = tmp_path / "data"
    commands = ["--help", "train --help", "evaluate --help", "reconstruct --help",
                f"generate --n 2 --size 32 --shard-size 2 --out {out} --model {model_file}",
                f"info {out}", f"verify {out}", f"preview {out} --out {tmp_path / 'p.png'}",
                f"sample --n 1 --model {model_file}"]
    done = subprocess.run([sys.executable, "-c", script, *commands], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
