"""Config: strict validation, TOML round trip, overrides; random values never crash the validator."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synthface.config import SamplingConfig, config_from_dict, load_config, parse_assignment
from synthface.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    cfg = dataclasses.replace(SamplingConfig(), image_size=64)
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert load_config(path) == cfg


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("image_size = 96\n[pose]\nyaw_deg = [-10, 10]\n")
    cfg = load_config(path, {"pose.pitch_deg": [-5, 5], "light.tint": 0.0})
    assert cfg.image_size == 96
    assert cfg.pose.yaw_deg == (-10.0, 10.0)
    assert cfg.pose.pitch_deg == (-5.0, 5.0)
    assert cfg.pose.roll_deg == SamplingConfig().pose.roll_deg
    assert cfg.light.tint == 0.0


@pytest.mark.parametrize(("data", "fragment"), [
    ({"pose": {"yew_deg": [0, 1]}}, "unknown config key pose.yew_deg"),
    ({"colour": 1}, "unknown config key colour"),
    ({"image_size": 8}, "image_size: 8 is outside [16, 4096]"),
    ({"image_size": 64.5}, "expected an integer"),
    ({"image_size": "big"}, "expected a number"),
    ({"image_size": True}, "expected a number"),
    ({"pose": {"yaw_deg": [30, -30]}}, "min > max"),
    ({"pose": {"yaw_deg": [0, 1, 2]}}, "expected a list of 2 numbers"),
    ({"pose": {"yaw_deg": [-200, 0]}}, "outside [-180, 180]"),
    ({"pose": 3}, "pose: expected a table"),
    ({"identity": {"std": float("nan")}}, "outside"),
    ({"background": {"mode": "plaid"}}, "not one of procedural, images, random, solid"),
    ({"background": {"directory": 3}}, "expected a string"),
    ({"background": {"colour": [0, 0, 2]}}, "outside [0, 1]"),
    ({"antialias": "fxaa"}, "antialias: 'fxaa' is not one of edges, msaa, off"),
    ({"antialias": 32}, "msaa_samples: 32 is outside [2, 16]"),
])
def test_bad_values_are_rejected_with_the_key_named(data, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert fragment in str(err.value)


@pytest.mark.parametrize(("old", "method", "samples"), [(1, "off", 4), (4, "msaa", 4), (8, "msaa", 8)])
def test_configs_that_gave_msaa_samples_read_as_the_same_rendering(old, method, samples):
    """Before ``antialias`` named a method it counted MSAA samples (1 = off): old plans still resume."""
    cfg = config_from_dict({"antialias": old})
    assert (cfg.antialias, cfg.msaa_samples) == (method, samples)
    assert SamplingConfig().antialias == "edges"


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("image_size = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_parse_assignment():
    assert parse_assignment("pose.yaw_deg=[-30, 30]") == ("pose.yaw_deg", [-30, 30])
    assert parse_assignment("background.mode=solid") == ("background.mode", "solid")
    assert parse_assignment("image_size = 64") == ("image_size", 64)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignment("image_size")


_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=5), st.lists(st.floats(-500, 500), max_size=4))
_keys = st.sampled_from(["image_size", "identity", "pose", "camera", "light", "background", "bogus"])
_sub = st.sampled_from(["std", "clip", "yaw_deg", "distance_mm", "face_fraction", "ambient", "mode",
                        "colour", "tint", "nope"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, st.one_of(_values, st.dictionaries(_sub, _values, max_size=3)), max_size=4))
def test_validator_accepts_or_raises_config_error_only(data):
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        assert str(exc).startswith(("config ", "unknown config key"))
        return
    assert isinstance(cfg, SamplingConfig)
    assert config_from_dict(cfg.to_dict()) == cfg  # whatever is accepted round-trips
