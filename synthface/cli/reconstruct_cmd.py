"""``synthface reconstruct``: a mesh, a depth map and an overlay for the face in each photo."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, SynthfaceError
from ..geometry import resolve_device
from ..model import MorphableModel
from ..photo import DEFAULT_FOV_DEG, read_image, resolve_detector
from ..reconstruct import MESH_FORMATS, reconstruct, reconstruct_all, write_outputs
from .options import DEVICES, detector_option, model_options


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``--box X,Y,W,H`` → four integers, W and H positive."""
    try:
        x, y, w, h = (round(float(v)) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--box {text!r} is not four numbers X,Y,W,H; give the face's box in photo pixels, "
                          "e.g. --box 120,80,200,240") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"--box {text!r} has a width or height <= 0; give W,H of at least 1 pixel")
    return x, y, w, h


@click.command("reconstruct")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Path(path_type=Path), required=True,
              help="Checkpoint written by 'synthface train'.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (created if missing).")
@click.option("--format", "mesh_format", type=click.Choice(MESH_FORMATS), default="obj", show_default=True,
              help="Mesh file format.")
@click.option("--fov", "fov_deg", type=click.FloatRange(1.0, 170.0), default=DEFAULT_FOV_DEG, show_default=True,
              help="Assumed field of view (degrees) across the photo's longer side.")
@click.option("--face-fraction", "fraction", type=click.FloatRange(0.05, 2.0), default=None,
              help="Share of the crop's side the face spans [default: the checkpoint's training data's].")
@click.option("--box", type=str, default=None, metavar="X,Y,W,H",
              help="The face (hairline to chin, cheek to cheek) in photo pixels, instead of detecting it; "
                   "used for every IMAGE.")
@click.option("--all-faces", is_flag=True,
              help="Reconstruct every face the detector finds, as STEM_face0 (the largest), STEM_face1, ...")
@detector_option
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the networks run (rendering always uses OpenGL).")
@model_options
def command(images: tuple[Path, ...], checkpoint: Path, out_dir: Path, mesh_format: str, fov_deg: float,
            fraction: float | None, box: str | None, all_faces: bool, detector: str, device: str,
            model: MorphableModel) -> None:
    """Reconstruct the largest face in each IMAGE (or every face: --all-faces) with CHECKPOINT.

    Writes STEM.obj (or .ply; camera space, mm), STEM_depth.png (16-bit, depth in 0.1 mm, 0 = no face),
    STEM_overlay.png (the shaded reconstruction and its landmarks over the face crop) and STEM.json (box,
    landmarks in photo pixels, head pose, coefficients, the assumed camera) into --out. An image that cannot
    be read or has no detectable face gets one 'error:' line and is skipped; the others are still done,
    and the exit status is 1 if any failed.
    """
    if box is not None and all_faces:
        raise ConfigError("--box gives one face and --all-faces asks for every detected one; use one of them")
    face_box = parse_box(box) if box is not None else None
    detector = resolve_detector(detector)  # a missing dlib is one error line, not one per photo
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems and stems[path.stem] != path:
            raise ConfigError(f"{stems[path.stem]} and {path} would write the same files in {out_dir}; "
                              "rename one or run them separately")
        stems[path.stem] = path
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create it ({exc.strerror or exc})") from exc
    from ..predict import Predictor, load_checkpoint  # imports torch: only when the command runs

    device = resolve_device(device)
    failed = 0
    with Predictor(load_checkpoint(checkpoint, device=device), model, device=device) as predictor:
        for stem, path in stems.items():
            try:
                photo = read_image(path)
                if all_faces:
                    named = [(f"{stem}_face{i}", r) for i, r in
                             enumerate(reconstruct_all(photo, predictor, detector=detector, fraction=fraction,
                                                                 fov_deg=fov_deg))]
                else:
                    named = [(stem, reconstruct(photo, predictor, box=face_box, detector=detector, fraction=fraction,
                                                fov_deg=fov_deg))]
                written = [(rec, write_outputs(rec, out_dir, name, mesh_format=mesh_format)) for name, rec in named]
            except SynthfaceError as exc:
                message = str(exc)
                click.echo(f"error: {message if message.startswith(str(path)) else f'{path}: {message}'}", err=True)
                failed += 1
                continue
            for rec, files in written:
                click.echo(f"{path}: face at {rec.box}; wrote {', '.join(p.name for p in files)}")
    if failed:
        click.get_current_context().exit(1)
