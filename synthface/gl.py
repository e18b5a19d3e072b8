"""The one place that creates OpenGL contexts and compiles synthface's shaders.

Headless OpenGL through EGL: NVIDIA's driver on a GPU machine, Mesa's
llvmpipe on a CPU one. Failures become a :class:`RenderError` that says which
packages or variables fix them.
"""

from __future__ import annotations

import os

import moderngl

from .errors import RenderError
from .resources import resource_dir

GL_REQUIRE = 430  # SSBOs (per-instance geometry) and gl_ClipDistance tiles
GL_CLIP_DISTANCE0 = 0x3000
GL_SAMPLE_ALPHA_TO_COVERAGE = 0x809E

EGL_HINT = ("install Mesa's EGL and software rasteriser (Debian/Ubuntu: apt-get install libegl1 "
            "libgl1-mesa-dri; on an NVIDIA machine the driver's libEGL_nvidia), and unset "
            "__EGL_VENDOR_LIBRARY_FILENAMES / EGL_PLATFORM if they point at a missing vendor library; "
            "then run 'synthface doctor'")


def create_context(device_index: int = 0) -> moderngl.Context:
    """A standalone EGL context of at least OpenGL 4.3, or RenderError with the fix."""
    try:
        ctx = moderngl.create_standalone_context(backend="egl", require=GL_REQUIRE, device_index=device_index)
    except Exception as exc:  # glcontext raises bare Exceptions with EGL's own words
        vendor = os.environ.get("__EGL_VENDOR_LIBRARY_FILENAMES")
        extra = f" (__EGL_VENDOR_LIBRARY_FILENAMES={vendor})" if vendor else ""
        raise RenderError(f"no usable OpenGL {GL_REQUIRE // 100}.{GL_REQUIRE // 10 % 10} through EGL"
                          f"{extra}: {exc}; {EGL_HINT}") from exc
    return ctx


def gl_info(ctx: moderngl.Context) -> dict[str, str]:
    """Vendor, renderer and version strings, for ``doctor`` and for the manifest."""
    return {k: str(ctx.info[f"GL_{k.upper()}"]) for k in ("vendor", "renderer", "version")}


def load_program(ctx: moderngl.Context, name: str, vertex: str | None = None,
                 defines: dict[str, int] | None = None) -> moderngl.Program:
    """Compile ``render_shaders/<vertex or name>.vert`` and ``<name>.frag`` into a program, with
    ``#define KEY VALUE`` lines after each ``#version`` line (variants of one source)."""
    folder = resource_dir("render_shaders", f"{name}.frag")
    lines = "".join(f"#define {key} {value}\n" for key, value in (defines or {}).items())

    def source(file: str) -> str:
        version, _, rest = (folder / file).read_text().partition("\n")
        return f"{version}\n{lines}{rest}"

    try:
        return ctx.program(vertex_shader=source(f"{vertex or name}.vert"), fragment_shader=source(f"{name}.frag"))
    except moderngl.Error as exc:
        raise RenderError(f"shader {name} failed to compile on {ctx.info['GL_RENDERER']}: {exc}") from exc
