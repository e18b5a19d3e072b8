"""``synthface model``: what a morphable-model file holds (format, sizes, units, landmarks)."""

from __future__ import annotations

import click

from ..model import MorphableModel
from .options import model_options


@click.command("model")
@model_options
def command(model: MorphableModel) -> None:
    """Describe the bundled model, or the one given with --model."""
    lo, hi = model.mean_shape.min(axis=0), model.mean_shape.max(axis=0)
    rows = [
        ("name", model.name),
        ("source", model.source),
        ("sha256", model.sha256),
        ("vertices", model.n_vertices),
        ("triangles", len(model.triangles)),
        ("identity components", model.n_identity),
        ("expression components", f"{model.n_expression} ({model.expression_kind})"),
        ("albedo components", model.n_albedo),
        ("ibug-68 landmarks", "yes" if model.has_landmarks else "no (pass --landmarks FILE)"),
        ("extent (mm)", " x ".join(f"{v:.1f}" for v in hi - lo)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
