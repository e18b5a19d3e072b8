"""``synthface doctor``: is headless OpenGL usable here, and how fast does a test render go?"""

from __future__ import annotations

import os
import time

import click
import numpy as np

from ..gl import create_context, gl_info
from ..loaders import load_model
from ..photo import resolve_detector
from ..render import FaceRenderer, RenderSettings
from ..sampling import sample_params

_ENV = ("__EGL_VENDOR_LIBRARY_FILENAMES", "EGL_PLATFORM", "LIBGL_ALWAYS_SOFTWARE", "GALLIUM_DRIVER",
        "LP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


@click.command("doctor")
def command() -> None:
    """Report the GL vendor, renderer and version, time a test render of the bundled model, and name the
    face detector photos get."""
    for name in _ENV:
        if name in os.environ:
            click.echo(f"{name}={os.environ[name]}")
    ctx = create_context()  # raises RenderError with the apt packages / variables to fix
    for key, value in gl_info(ctx).items():
        click.echo(f"GL {key:<8} {value}")
    model = load_model()
    params = sample_params(model, seed=0, indices=range(16))
    with FaceRenderer(model, RenderSettings(image_size=200, faces_per_draw=16), ctx=ctx) as renderer:
        renderer.render(params)  # warm-up: shader compile, buffer allocation
        start = time.perf_counter()
        out = renderer.render(params)
        seconds = time.perf_counter() - start
    ctx.release()
    covered = float(np.mean(out.mask))
    click.echo(f"test render: 16 faces at 200x200 in {seconds * 1000:.0f} ms "
               f"({16 / seconds:.0f} faces/s), {covered:.0%} of pixels covered")
    click.echo("rendering works")
    detector = resolve_detector()
    click.echo(f"face detector (reconstruct, evaluate --photos, --real-images): {detector}"
               + ("" if detector == "dlib" else " (dlib's finds more faces: pip install 'synthface[detect]')"))
