"""``synthface preview``: a contact-sheet PNG of the first samples (image, depth, mask, landmarks)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SynthfaceError
from ..preview import contact_sheet, read_samples
from ..shards import temp_name


@click.command("preview")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("preview.png"),
              show_default=True, help="PNG file to write.")
@click.option("--count", type=click.IntRange(1, 256), default=8, show_default=True, help="Samples to show.")
@click.option("--columns", type=click.IntRange(1, 16), default=4, show_default=True)
def command(dataset: Path, out: Path, count: int, columns: int) -> None:
    """Write a contact sheet of DATASET's first samples."""
    sheet = contact_sheet(read_samples(dataset, count), columns=columns)
    tmp = temp_name(out)
    try:
        sheet.save(tmp, format="PNG")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SynthfaceError(f"cannot write {out}: {exc.strerror or exc}; check the path and permissions") from exc
    click.echo(f"wrote {out} ({sheet.width}x{sheet.height})")
