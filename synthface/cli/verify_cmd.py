"""``synthface verify``: re-check manifest, sha256s, formats, shapes and finite values; name what is bad."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SynthfaceError
from ..verify import verify_dataset


@click.command("verify")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
def command(dataset: Path) -> None:
    """Check every shard of DATASET against its manifest."""
    problems = verify_dataset(dataset)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    if problems:
        files = sorted({p.file for p in problems})
        raise SynthfaceError(f"{len(problems)} problem(s) in {', '.join(files)}; delete the bad shards and run "
                             f"'synthface generate --resume --out {dataset}' to redo them")
    click.echo(f"{dataset}: ok")
