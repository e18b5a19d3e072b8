"""``synthface info``: what a dataset holds (from its manifest; every shard must open)."""

from __future__ import annotations

from pathlib import Path

import click

from ..shards import open_source


@click.command("info")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
def command(dataset: Path) -> None:
    """Summarise DATASET: samples, shards, image size, model, seed, size on disk."""
    source = open_source(dataset)  # every shard present and of this run (attributes only); verify re-hashes
    m = source.manifest or {}
    size = sum(s.path.stat().st_size for s in source.shards)
    rows = [
        ("samples", m["n"]),
        ("shards", f"{len(m['shards'])} of up to {m['job']['shard_size']} samples"),
        ("image size", f"{m['image_size']} x {m['image_size']}"),
        ("model", f"{m['model']['name']} (sha256 {m['model']['sha256'][:12]}…)"),
        ("seed", m["seed"]),
        ("extras", ", ".join(m["job"]["extras"]) or "none"),
        ("codec", m["job"]["codec"]),
        ("on disk", f"{size / 2**20:.1f} MiB ({size / max(m['n'], 1) / 1024:.1f} KiB/sample)"),
        ("synthface", m["synthface_version"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
