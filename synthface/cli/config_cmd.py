"""``synthface config``: print the effective sampling config as TOML (a template for --config)."""

from __future__ import annotations

import click

from ..config import SamplingConfig
from .options import sampling_options


@click.command("config")
@sampling_options
def command(config: SamplingConfig) -> None:
    """Validate settings and print the resulting config (defaults if none given)."""
    click.echo(config.to_toml(), nl=False)
