"""Options shared by several commands, defined once; choices come from the library's registries."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from ..config import load_config, parse_assignment
from ..loaders import FORMATS, load_model
from ..photo import DETECTORS


class RangeType(click.ParamType):
    """``MIN,MAX`` → a (min, max) tuple of floats."""

    name = "MIN,MAX"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        try:
            lo, hi = (float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not two comma-separated numbers like -30,30", param, ctx)
        return lo, hi


RANGE = RangeType()


class ShardRangeType(click.ParamType):
    """``START:STOP`` → (start, stop) shard indices, stop exclusive."""

    name = "START:STOP"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            lo, hi = (int(v) for v in str(value).split(":"))
        except ValueError:
            self.fail(f"{value!r} is not START:STOP shard indices like 0:10", param, ctx)
        if not 0 <= lo < hi:
            self.fail(f"{value!r} needs 0 <= START < STOP", param, ctx)
        return lo, hi


SHARD_RANGE = ShardRangeType()
DEVICES = ("auto", "cpu", "cuda")

detector_option = click.option(
    "--detector", type=click.Choice(DETECTORS), default="auto", show_default=True,
    help="Face detector: dlib's HOG detector (pip install 'synthface[detect]'), OpenCV's Haar cascade, or "
         "auto (dlib when installed, else Haar).")


def model_options(f: Callable) -> Callable:
    """``--model``, ``--model-format``, ``--landmarks``; passes ``model`` (a loaded MorphableModel)."""

    @click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None,
                  help="Morphable-model file (BFM2009 .mat, BFM2017/2019 .h5, Deep3DFaceRecon .mat, "
                       "synthface .npz); default: the bundled CC0 face model.")
    @click.option("--model-format", type=click.Choice(sorted(FORMATS)), default=None,
                  help="Override format detection.")
    @click.option("--landmarks", type=click.Path(dir_okay=False), default=None,
                  help="File of 68 ibug vertex indices (0-based), for models without them.")
    @functools.wraps(f)
    def wrapper(*args: Any, model_path: str | None, model_format: str | None, landmarks: str | None,
                **kwargs: Any) -> Any:
        model = load_model(model_path, landmarks=landmarks, format=model_format)
        return f(*args, model=model, **kwargs)

    return wrapper


# Flag → dotted config key, for the common knobs; everything else through --config or --set.
_FLAG_KEYS = {
    "size": "image_size",
    "identity_std": "identity.std",
    "expression_std": "expression.std",
    "yaw": "pose.yaw_deg",
    "pitch": "pose.pitch_deg",
    "roll": "pose.roll_deg",
    "distance": "camera.distance_mm",
    "background": "background.mode",
    "backgrounds": "background.directory",
}


def sampling_options(f: Callable) -> Callable:
    """``--config``, ``--set`` and the common sampling flags; passes ``config`` (a SamplingConfig)."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="TOML file of sampling settings (see 'synthface config').")
    @click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
                  help="Override one config key, e.g. --set light.ambient=[0.8,1.0] (repeatable).")
    @click.option("--size", type=int, default=None, help="Image width = height in pixels.")
    @click.option("--identity-std", type=float, default=None, help="Identity coefficient std.")
    @click.option("--expression-std", type=float, default=None, help="PCA expression coefficient std.")
    @click.option("--yaw", type=RANGE, default=None, help="Yaw range in degrees, e.g. -45,45.")
    @click.option("--pitch", type=RANGE, default=None, help="Pitch range in degrees.")
    @click.option("--roll", type=RANGE, default=None, help="Roll range in degrees.")
    @click.option("--distance", type=RANGE, default=None, help="Camera distance range in mm.")
    @click.option("--background", type=click.Choice(["procedural", "images", "random", "solid"]), default=None,
                  help="Background mode (default procedural).")
    @click.option("--backgrounds", type=str, default=None, metavar="DIR",
                  help="Folder of background images (random crop, flip, colour jitter); implies --background images.")
    @functools.wraps(f)
    def wrapper(*args: Any, config_path: str | None, assignments: tuple[str, ...], **kwargs: Any) -> Any:
        overrides = dict(parse_assignment(a) for a in assignments)
        for flag, key in _FLAG_KEYS.items():
            value = kwargs.pop(flag)
            if value is not None:
                overrides[key] = value
        if "background.directory" in overrides:
            overrides.setdefault("background.mode", "images")
        config = load_config(config_path, overrides)
        return f(*args, config=config, **kwargs)

    return wrapper

