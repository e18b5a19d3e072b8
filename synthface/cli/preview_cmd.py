"""``synthface preview``: a contact-sheet PNG of the first samples (image, depth, mask, landmarks)."""

from __future__ import annotations

import io
from pathlib import Path

import click
from PIL import Image

from ..errors import SynthfaceError
from ..preview import contact_sheet, read_samples
from ..shards import atomic_write


def _image_format(out: Path) -> str:
    """PIL's format for ``out``'s extension (PNG, JPEG, WebP, ...), so the bytes match the name; PNG
    when it has none (e.g. /dev/stdout)."""
    if not out.suffix:
        return "PNG"
    Image.init()
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise SynthfaceError(f"--out {out}: unknown image type {out.suffix!r}; "
                             "end the name with .png, .jpg or .webp")
    return fmt


@click.command("preview")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("preview.png"),
              show_default=True, help="Image file to write; its extension picks the format (.png, .jpg, ...).")
@click.option("--count", type=click.IntRange(1, 256), default=8, show_default=True, help="Samples to show.")
@click.option("--columns", type=click.IntRange(1, 16), default=4, show_default=True)
def command(dataset: Path, out: Path, count: int, columns: int) -> None:
    """Write a contact sheet of DATASET's first samples."""
    fmt = _image_format(out)
    sheet = contact_sheet(read_samples(dataset, count), columns=columns)
    buffer = io.BytesIO()
    sheet.convert("RGB").save(buffer, format=fmt)
    try:
        atomic_write(out, buffer.getvalue())
    except OSError as exc:
        raise SynthfaceError(f"cannot write {out}: {exc.strerror or exc}; check the path and permissions") from exc
    click.echo(f"wrote {out} ({sheet.width}x{sheet.height})")
