"""``synthface sample``: draw parameters for a range of sample indices and print or save them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import click
import numpy as np

from ..config import SamplingConfig
from ..errors import SynthfaceError
from ..model import MorphableModel
from ..params import BACKGROUND_FIELDS, MATERIAL_FIELDS, POSE_FIELDS, SHAPE, SHAPE_FIELDS
from ..sampling import sample_params
from ..shards import atomic_write
from .options import model_options, sampling_options

_NAMED = {"pose": POSE_FIELDS, "material": MATERIAL_FIELDS, "background": BACKGROUND_FIELDS}


def _record(params: dict[str, np.ndarray], row: int) -> dict:
    """One sample as JSON: named columns as objects, only the shapes in use, the sha256 as text."""
    rec = {k: v[row].tolist() for k, v in params.items()}
    for key, names in _NAMED.items():
        rec[key] = dict(zip(names, params[key][row].tolist(), strict=True))
    rec["background_shapes"] = [dict(zip(SHAPE_FIELDS, s.tolist(), strict=True))
                                for s in params["background_shapes"][row] if s[SHAPE["kind"]] > 0]
    rec["background_sha256"] = params["background_sha256"][row].decode()
    return rec


@click.command("sample")
@click.option("--n", "count", type=click.IntRange(min=1), default=4, show_default=True,
              help="How many samples.")
@click.option("--first", type=click.IntRange(min=0), default=0, show_default=True,
              help="Global index of the first sample.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the arrays to this .npz instead of printing JSON lines.")
@model_options
@sampling_options
def command(count: int, first: int, seed: int, out: Path | None, model: MorphableModel,
            config: SamplingConfig) -> None:
    """Sample face parameters (identity, expression, albedo, pose, light, camera).

    Sample i depends only on (seed, i): `--first 10 --n 5` prints exactly
    samples 10-14 of any larger run with the same seed and config.
    """
    params = sample_params(model, seed=seed, indices=np.arange(first, first + count), config=config)
    if out is None:
        for row in range(count):
            click.echo(json.dumps(_record(params, row)))
        return
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    try:
        atomic_write(out, buffer.getvalue())
    except OSError as exc:
        raise SynthfaceError(f"cannot write {out}: {exc.strerror or exc}; "
                             "check the path and permissions") from exc
    click.echo(f"wrote {count} samples to {out}")
