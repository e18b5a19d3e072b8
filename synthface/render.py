"""Render parameter batches into image / depth / mask (+ normals, PNCC) and landmarks.

The GPU only rasterizes and shades: geometry (vertices, normals, albedo) comes
from the batched geometry step and is uploaded per batch; one instanced draw
renders up to ``faces_per_draw`` faces into an atlas of tiles (shaders in
``render_shaders/face.*``), which is read back once and cut into samples.

One pass at one sample per pixel (at its centre) draws each tile's background
(``render_shaders/background.*``), the heads, their hair and occluders, and
gives the colour together with depth, class, normals and PNCC — so mask,
segmentation and landmark visibility are exact at pixel centres. The image's
edges are then anti-aliased by one of :data:`~synthface.config.ANTIALIAS`:
``edges`` (default) blends the colour across the edges those exact buffers
show (``render_shaders/edges.frag``), a cheap full-screen pass; ``msaa`` draws
the colour again in a second pass with ``msaa_samples`` samples per pixel
(costly on a CPU's llvmpipe, free on a GPU); ``off`` keeps the stair steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import moderngl
import numpy as np

from .backgrounds import BackgroundImages, fractal_noise
from .clothes import collar_fields
from .config import ANTIALIAS
from .errors import ConfigError, RenderError
from .geometry import camera_vertices, project, to_torch, vertex_normals
from .gl import GL_CLIP_DISTANCE0, GL_SAMPLE_ALPHA_TO_COVERAGE, create_context, load_program
from .hair import NO_HAIR, face_hair_fields, hair_fields
from .model import FACE_CLASSES, SEGMENTATION_CLASSES, MorphableModel
from .params import (
    BACKGROUND,
    BACKGROUND_FIELDS,
    BACKGROUND_SOURCES,
    CLOTHES_FIELDS,
    FACIAL_HAIR_FIELDS,
    HAIR,
    HAIR_FIELDS,
    MATERIAL_FIELDS,
    MAX_OCCLUDERS,
    MAX_SHAPES,
    OCCLUDER_FIELDS,
    SHAPE_FIELDS,
)
from .sampling import typical_eyes
from .shading import C1

FACE_IDS = np.array([SEGMENTATION_CLASSES.index(c) for c in FACE_CLASSES], np.uint8)


@dataclass(frozen=True)
class RenderSettings:
    """How to render; all sizes in pixels, distances in mm."""

    image_size: int = 200
    """Output width = height."""
    faces_per_draw: int = 64
    """Faces rendered by one instanced draw into one atlas (bounded by GL_MAX_TEXTURE_SIZE)."""
    normals: bool = False
    """Also return per-pixel unit camera-space normals."""
    pncc: bool = False
    """Also return the projected normalized coordinate code (mean-shape xyz scaled to [0, 1])."""
    depth_range: tuple[float, float] = (10.0, 100000.0)
    """Near and far clipping distances."""
    profile: bool = False
    """Wait for the GPU after each draw so ``FaceRenderer.timings`` separates drawing from readback
    (costs the overlap of CPU and GPU work; for benchmarks)."""
    antialias: str = "edges"
    """How the image's edges are anti-aliased: one of :data:`~synthface.config.ANTIALIAS`."""
    msaa_samples: int = 4
    """Samples per pixel of the ``msaa`` colour pass."""
    landmark_tolerance_mm: float = 4.0
    """A landmark is hidden if the surface at its pixel is nearer by more than this or by two pixel
    footprints (z / f), whichever is larger: steep surfaces change depth fast across a pixel."""

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"image size {self.image_size} is outside [16, 4096]; choose a size in that range")
        if self.faces_per_draw < 1:
            raise ConfigError(f"faces_per_draw must be at least 1, got {self.faces_per_draw}")
        if self.antialias not in ANTIALIAS:
            raise ConfigError(f"antialias must be one of {', '.join(ANTIALIAS)}, got {self.antialias!r}")
        if not 2 <= self.msaa_samples <= 16:
            raise ConfigError(f"msaa_samples must be 2 to 16 samples per pixel, got {self.msaa_samples}")


@dataclass(frozen=True)
class RenderOutput:
    """One rendered batch; B samples of H × W pixels (H = W = image size)."""

    image: np.ndarray
    """(B, H, W, 3) uint8 sRGB over the background, its edges anti-aliased (``RenderSettings.antialias``)."""
    depth: np.ndarray
    """(B, H, W) float32 camera-space z in mm at pixel centres of every rendered surface; 0 on background."""
    mask: np.ndarray
    """(B, H, W) uint8, 1 where the face region (:data:`~synthface.model.FACE_CLASSES`) covers the pixel centre."""
    segmentation: np.ndarray
    """(B, H, W) uint8 class ids (:data:`~synthface.model.SEGMENTATION_CLASSES`) at pixel centres; 0 = background."""
    landmarks_xy: np.ndarray
    """(B, 68, 2) float32 pixel coordinates ``K·X/z`` (origin: top-left pixel's corner)."""
    landmarks_visible: np.ndarray
    """(B, 68) bool: inside the image and not hidden by the face itself."""
    normals: np.ndarray | None = None
    """(B, H, W, 3) float32 unit camera-space normals (0 on background), if asked for."""
    pncc: np.ndarray | None = None
    """(B, H, W, 3) float32 PNCC in [0, 1] (0 on background), if asked for."""


def pncc_box(model: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """(3,), (3,) float32 the mean head's bounding box (mm): the bust (class ``clothes``) left out, so
    a model's face codes the same with or without one."""
    head = model.mean_shape if model.regions is None else \
        model.mean_shape[model.regions != SEGMENTATION_CLASSES.index("clothes")]
    return head.min(axis=0), head.max(axis=0)


def pncc_code(model: MorphableModel) -> np.ndarray:
    """(V, 3) float32: the mean shape's coordinates scaled to [0, 1] per axis over the head's box
    (:func:`pncc_box`; Zhu et al. 2016). The bust lies outside it; the rendered ``pncc`` clamps it onto
    the box, so every pixel's code is in [0, 1]."""
    lo, hi = pncc_box(model)
    return ((model.mean_shape - lo) / np.maximum(hi - lo, 1e-6)).astype(np.float32)


def landmark_visibility(xy: np.ndarray, z: np.ndarray, depth: np.ndarray, tolerance) -> np.ndarray:
    """(B, L) bool: landmark inside the image and not hidden: some covered pixel of its 3 × 3
    neighbourhood has a surface no more than ``tolerance`` (mm, scalar or (B, L)) in front of it.

    The neighbourhood keeps landmarks on the silhouette (own pixel centre just off the mesh) and on
    steep surfaces (depth changes fast across a pixel) visible; an occluder must be nearer by more
    than the tolerance at every covered neighbour.
    """
    b, h, w = depth.shape
    inside = (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)
    col = np.clip(np.floor(xy[..., 0]).astype(np.int64), 0, w - 1)
    row = np.clip(np.floor(xy[..., 1]).astype(np.int64), 0, h - 1)
    offsets = np.array([-1, 0, 1])
    rows = np.clip(row[..., None, None] + offsets[:, None], 0, h - 1)  # (B, L, 3, 1)
    cols = np.clip(col[..., None, None] + offsets[None, :], 0, w - 1)  # (B, L, 1, 3)
    neigh = depth[np.arange(b)[:, None, None, None], rows, cols]  # (B, L, 3, 3)
    farthest = np.where(neigh > 0, neigh, -np.inf).max(axis=(-2, -1))  # -inf: no covered pixel
    return inside & (z <= farthest + tolerance)


def rim_triangles(triangles: np.ndarray, n_vertices: int, rings: int = 1) -> np.ndarray:
    """(F,) bool: the triangles within ``rings`` rings of an open or non-manifold edge.

    Only there can a surface's back face be the nearest one (looking into the neck, past a lash strip's
    edge, into the mouth); elsewhere the mesh is closed, its back faces always hidden behind its front
    faces, and the renderer culls them — on a CPU that skips a fifth of the rasterization."""
    edges = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, count = np.unique(edges, axis=0, return_counts=True)
    near = np.zeros(n_vertices, bool)
    near[unique[count != 2].ravel()] = True
    for _ in range(rings):
        near[triangles[near[triangles].any(axis=1)].ravel()] = True
    return near[triangles].any(axis=1)


NO_IRIS = 1.0e4
"""``in_iris`` of vertices off the eyeballs (the model's NaN); the shader takes x > 1000 for "not an eyeball"."""


def iris_field(model: MorphableModel) -> np.ndarray:
    """(V, 2) float32 ``in_iris``: the model's ``iris_coordinates`` with :data:`NO_IRIS` for NaN (and
    everywhere on a model without them)."""
    if model.iris_coordinates is None:
        return np.full((model.n_vertices, 2), NO_IRIS, np.float32)
    return np.nan_to_num(model.iris_coordinates, nan=NO_IRIS).astype(np.float32)


def eye_white(model: MorphableModel) -> tuple[float, float, float]:
    """Linear RGB of the model's unshadowed sclera (the brightest eyeball albedo): the iris is darkened
    by the sclera's baked lid shadow, ``v_albedo / eye_white``. (1, 1, 1) without iris coordinates."""
    if model.iris_coordinates is None:
        return (1.0, 1.0, 1.0)
    on_eye = ~np.isnan(model.iris_coordinates[:, 0])
    return tuple(float(c) for c in np.maximum(model.albedo_mean[on_eye].max(axis=0), 1e-3))


SHADOW_DIVISOR = 2
"""A shadow tile's side is the image's over this: the map spans the whole head (~1.5× the face) at
~2 mm a texel at 200 px, as soft as the PCF blurs it anyway, for a quarter of the raster work."""
SHADOW_MARGIN_MM = 40.0
"""Added round the head's extent in the shadow map: the hair shell stands up to ~30 mm off the scalp."""


def shadow_frames(verts: np.ndarray, light: np.ndarray, shadow: np.ndarray, framed: np.ndarray) -> np.ndarray:
    """(B, 4, 4) float32 light-space frames of the shadow pass, one per sample.

    Rows: ``u``, ``v`` (the map's axes; ``.w`` = its half-size H, mm), ``w`` (the direction the light
    travels, from SH band 1 as the shader reads it; ``.w`` = the depth half-range D, mm) and the centre
    ``c`` (``.w`` = the sample's ``shadow`` strength). A camera-space point p maps to
    ((p−c)·u/H, (p−c)·v/H, (p−c)·w/D) in [−1, 1]³, a map tile of the atlas. ``framed``: (V,) bool, the
    vertices the map spans (the head; the bust below it only receives shadows).
    """
    band1 = C1 * light[:, [3, 1, 2], :].sum(axis=2)  # (B, 3): x, y, z, all channels together
    towards = band1 / np.maximum(np.linalg.norm(band1, axis=1, keepdims=True), 1e-12)
    w = -towards
    w[np.linalg.norm(band1, axis=1) < 1e-9] = (0.0, 0.0, 1.0)  # no directional light: any frame will do
    helper = np.where(np.abs(w[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    u = np.cross(w, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(w, u)
    head = verts[:, framed]
    centre = 0.5 * (head.min(axis=1) + head.max(axis=1))
    d = head - centre[:, None]
    half = np.maximum(np.abs(np.einsum("bvk,bk->bv", d, u)).max(axis=1),
                      np.abs(np.einsum("bvk,bk->bv", d, v)).max(axis=1)) + SHADOW_MARGIN_MM
    depth = np.abs(np.einsum("bvk,bk->bv", verts - centre[:, None], w)).max(axis=1) + SHADOW_MARGIN_MM
    return np.stack([np.c_[u, half], np.c_[v, depth], np.c_[w, np.zeros(len(w))], np.c_[centre, shadow]],
                    axis=1).astype(np.float32)


def texture_seeds(params: dict[str, np.ndarray]) -> np.ndarray:
    """(B,) float32 in [0, 1): each sample's offset into the shaders' noise texture (brow hairs, stubble,
    skin, cloth, occluder grain), from its global ``index`` (the batch position where there is none).
    Why not the draw's instance number: a sample's slot in a sub-batch would then change its pixels."""
    index = params["index"] if "index" in params else np.arange(len(params["pose"]))
    return np.mod(np.asarray(index, np.float64) * 0.6180339887498949, 1.0).astype(np.float32)


def scene_defaults(b: int) -> dict[str, np.ndarray]:
    """Scene parameters for a batch that brings none: a black solid background, matte skin, no occlusion,
    no cast shadows, typical (brown) eyes.

    What trainers and predictors render (their depth, mask, PNCC and normals do not depend on them)."""
    return {"material": np.zeros((b, len(MATERIAL_FIELDS)), np.float32),
            "background": np.zeros((b, len(BACKGROUND_FIELDS)), np.float32),
            "background_shapes": np.zeros((b, MAX_SHAPES, len(SHAPE_FIELDS)), np.float32),
            "occluders": np.zeros((b, MAX_OCCLUDERS, len(OCCLUDER_FIELDS)), np.float32),
            "hair": np.zeros((b, len(HAIR_FIELDS)), np.float32),
            "facial_hair": np.zeros((b, len(FACIAL_HAIR_FIELDS)), np.float32),
            "clothes": np.zeros((b, len(CLOTHES_FIELDS)), np.float32),
            "eyes": np.repeat(typical_eyes()[None], b, axis=0),
            "shadow": np.zeros(b, np.float32),
            "background_sha256": np.full(b, b"", "S64")}


class FaceRenderer:
    """Renders a model's faces with OpenGL; owns its GL objects (call :meth:`release`, or use ``with``).

    ``backgrounds`` supplies the pixels of image backgrounds (``source`` = image rows of
    ``params["background"]``); batches without scene parameters get :func:`scene_defaults`.
    """

    def __init__(self, model: MorphableModel, settings: RenderSettings | None = None, *,
                 ctx: moderngl.Context | None = None, device: str = "cpu",
                 backgrounds: BackgroundImages | None = None) -> None:
        if not model.has_landmarks:
            raise ConfigError(f"model {model.name!r} has no ibug-68 landmarks, which every shard stores; "
                              "pass --landmarks FILE with 68 vertex indices")
        self.model = model
        self.settings = settings or RenderSettings()
        self.device = device
        self.backgrounds = backgrounds
        self._occlusion_ready = False
        self._own_ctx = ctx is None
        self.ctx = ctx or create_context()
        with self.ctx:
            self._build_gl(model)
        self._buffers: dict[int, moderngl.Buffer] = {}
        self.timings: dict[str, float] = {}
        """Seconds spent per stage (geometry, upload, draw, readback, compose), summed over calls."""

    def _build_gl(self, model: MorphableModel) -> None:
        """Program, index/PNCC buffers, atlas targets and framebuffer (in our context)."""
        size = self.settings.image_size
        max_tex = int(self.ctx.info["GL_MAX_TEXTURE_SIZE"])
        per_row = max(1, min(math.ceil(math.sqrt(self.settings.faces_per_draw)), max_tex // size))
        rows = max(1, min(math.ceil(self.settings.faces_per_draw / per_row), max_tex // size))
        self.grid = (per_row, rows)
        self._shadow_size = max(size // SHADOW_DIVISOR, 16)
        self.faces_per_draw = min(self.settings.faces_per_draw, per_row * rows)
        # Two variants of face.*: the head's program has no discard, so the depth test runs before its
        # shading; the hair shell's cuts its hairline with discard.
        self._program = load_program(self.ctx, "face", defines={"HAIR_PASS": 0})
        self._hair_program = load_program(self.ctx, "face", defines={"HAIR_PASS": 1})
        # The shadow pass: the same two variants, drawn from the light into a depth-only map atlas.
        self._shadow_programs = [load_program(self.ctx, "face", defines={"HAIR_PASS": h, "SHADOW_PASS": 1,
                                                                          "DEPTH_ONLY": 1}) for h in (0, 1)]
        # The heads' depth pre-pass: drawn before the hair shell, whose back half (behind the face, >2/3 of
        # its fragments) then fails the depth test before it is shaded.
        self._depth_program = load_program(self.ctx, "face", defines={"HAIR_PASS": 0, "DEPTH_ONLY": 1})
        for name, value in (("n_vertices", model.n_vertices), ("grid", self.grid),
                            ("tile_size", (float(size), float(size))), ("depth_range", self.settings.depth_range),
                            ("noise", 0), ("coverage_to_alpha", 0),
                            ("skin_texture", float(model.regions is not None)),
                            ("eye_white", eye_white(model)), ("shadow_map", 2),
                            ("shadow_size", float(self._shadow_size)),
                            ("pncc_extent", tuple(float(x) for x in np.subtract(*pncc_box(model)[::-1]))),
                            *((f"{c}_class", SEGMENTATION_CLASSES.index(c) / 255.0)
                              for c in ("hair", "face", "brows", "neck", "clothes", "eyes", "mouth"))):
            for program in (self._program, self._hair_program, self._depth_program, *self._shadow_programs):
                if program.get(name, None) is not None:  # each variant uses some of them
                    program[name] = value
        rim = rim_triangles(model.triangles, model.n_vertices)
        self._n_closed = int((~rim).sum())  # closed-surface triangles first: drawn with back faces culled
        self._ibo = self.ctx.buffer(np.ascontiguousarray(np.concatenate([model.triangles[~rim], model.triangles[rim]]),
                                                         dtype=np.uint32))
        self._pncc = self.ctx.buffer(pncc_code(model))
        self._occlusion = self.ctx.buffer(np.ones(model.n_vertices, np.float32))  # filled on first use
        regions = model.regions if model.regions is not None else \
            np.full(model.n_vertices, SEGMENTATION_CLASSES.index("face"), np.uint8)
        self._regions = self.ctx.buffer(regions.astype(np.float32))
        hairline, temple = hair_fields(model)
        self._hairline = self.ctx.buffer(np.stack([hairline, temple], axis=1))
        self._face_hair = self.ctx.buffer(face_hair_fields(model))
        self._collar = self.ctx.buffer(collar_fields(model))
        self._iris = self.ctx.buffer(iris_field(model))
        attributes = [(self._pncc, (("3f", "in_pncc"),)), (self._occlusion, (("f", "in_occlusion"),)),
                      (self._regions, (("f", "in_region"),)),
                      (self._hairline, (("f", "in_hairline"), ("f", "in_temple"))),
                      (self._face_hair, (("4f", "in_face_hair"),)), (self._collar, (("2f", "in_collar"),)),
                      (self._iris, (("2f", "in_iris"),))]
        self._vao = self._vertex_array(self._program, attributes, self._ibo)
        self._depth_vao = self._vertex_array(self._depth_program, attributes, self._ibo)
        # The hair shell: only triangles hair can reach (none for a model without a scalp).
        scalp_tris = model.triangles[(hairline[model.triangles] > NO_HAIR).all(axis=1)]
        self._hair_ibo = self.ctx.buffer(np.ascontiguousarray(scalp_tris, np.uint32)) if len(scalp_tris) else None
        self._hair_vao = None if self._hair_ibo is None else \
            self._vertex_array(self._hair_program, attributes, self._hair_ibo)
        self._shadow_vaos = [self._vertex_array(self._shadow_programs[0], attributes, self._ibo)]
        if self._hair_ibo is not None:
            self._shadow_vaos.append(self._vertex_array(self._shadow_programs[1], attributes, self._hair_ibo))
        self._shadow_framed = np.flatnonzero(regions != SEGMENTATION_CLASSES.index("clothes"))
        self._bg_program = load_program(self.ctx, "background")
        for name, value in (("grid", self.grid), ("tile_size", (float(size), float(size))),
                            ("n_fields", len(BACKGROUND_FIELDS)), ("max_shapes", MAX_SHAPES),
                            ("tile_pixels", float(size)), ("noise", 0), ("images", 1)):
            self._bg_program[name] = value
        self._bg_vao = self.ctx.vertex_array(self._bg_program, [])
        self._occ_program = load_program(self.ctx, "occluder")
        for name, value in (("grid", self.grid), ("tile_size", (float(size), float(size))),
                            ("depth_range", self.settings.depth_range), ("max_occluders", MAX_OCCLUDERS),
                            ("n_fields", len(OCCLUDER_FIELDS)), ("noise", 0),
                            ("occluder_class", SEGMENTATION_CLASSES.index("occluder") / 255.0)):
            self._occ_program[name] = value
        self._occ_vao = self.ctx.vertex_array(self._occ_program, [])
        self._noise = self.ctx.texture((256, 256), 4, fractal_noise(256, 4).tobytes())
        self._noise.repeat_x = self._noise.repeat_y = True
        self._noise.filter = (moderngl.LINEAR_MIPMAP_LINEAR, moderngl.LINEAR)
        self._noise.build_mipmaps()
        self._images: moderngl.TextureArray | None = None  # image backgrounds, one layer per instance
        atlas = (per_row * size, rows * size)
        # Colour and depth always; normals / PNCC only when asked (fragment outputs without a target
        # are discarded, which saves their bandwidth and readback).
        wanted = [(4, "f1"), (1, "f4"), (1, "f1")] + [(4, "f4")] * (self.settings.normals or self.settings.pncc) \
            + [(4, "f4")] * self.settings.pncc
        self._targets = [self.ctx.texture(atlas, c, dtype=d) for c, d in wanted]
        self._depth = self.ctx.depth_renderbuffer(atlas)
        self._fbo = self.ctx.framebuffer(color_attachments=self._targets, depth_attachment=self._depth)
        # Shadow maps: one depth tile per sample, as the image's tiles; compared and filtered (PCF) on lookup.
        self._shadow_map = self.ctx.depth_texture((per_row * self._shadow_size, rows * self._shadow_size))
        self._shadow_map.compare_func = "<="
        self._shadow_map.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self._shadow_map.repeat_x = self._shadow_map.repeat_y = False
        self._shadow_fbo = self.ctx.framebuffer(depth_attachment=self._shadow_map)
        # The anti-aliased image: [framebuffer to draw into, framebuffer holding the result, its objects].
        self._msaa: list[Any] = []
        self._edges: list[Any] = []
        if self.settings.antialias == "msaa":
            samples = self.settings.msaa_samples
            if samples > self.ctx.max_samples:
                most = self.ctx.max_samples
                raise ConfigError(f"msaa_samples {samples} is more than this OpenGL ({self.ctx.info['GL_RENDERER']}) "
                                  f"supports ({most}); set msaa_samples to {most} or less")
            colour = self.ctx.renderbuffer(atlas, 4, samples=samples)
            depth = self.ctx.depth_renderbuffer(atlas, samples=samples)
            resolved = self.ctx.texture(atlas, 4)
            self._msaa = [self.ctx.framebuffer([colour], depth), self.ctx.framebuffer([resolved]),
                          colour, depth, resolved]
        elif self.settings.antialias == "edges":
            program = load_program(self.ctx, "edges", vertex="background")
            for name, value in (("grid", self.grid), ("tile_size", (float(size), float(size))),
                                ("tile_pixels", (size, size))):
                program[name] = value
            resolved = self.ctx.texture(atlas, 4)
            self._edges = [program, self.ctx.vertex_array(program, []), self.ctx.framebuffer([resolved]), resolved]

    def _vertex_array(self, program: moderngl.Program, columns: list, ibo: moderngl.Buffer) -> moderngl.VertexArray:
        """``columns``: (buffer, ((format, attribute), ...)) per buffer of float32 per-vertex data. An
        attribute a program variant compiled away (the head has no hairline) becomes padding."""
        content = []
        for buffer, fields in columns:
            used = [name for _, name in fields if program.get(name, None) is not None]
            layout = " ".join(f if name in used else f"{4 * int(f[:-1] or 1)}x" for f, name in fields)
            if used:
                content.append((buffer, layout, *used))
        return self.ctx.vertex_array(program, content, index_buffer=ibo)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def __enter__(self) -> FaceRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Free every GL object (and the context if this renderer created it)."""
        with self.ctx:
            for obj in (self._vao, self._depth_vao, self._depth_program, self._fbo, self._depth, *self._targets,
                        self._ibo, self._pncc, self._occlusion,
                        self._regions, self._hairline, self._face_hair, self._collar, self._iris,
                        *filter(None, (self._hair_vao, self._hair_ibo)),
                        self._bg_vao, self._bg_program, self._occ_vao, self._occ_program,
                        self._program, self._hair_program, self._noise, *self._msaa, *self._edges,
                        *self._shadow_vaos, *self._shadow_programs, self._shadow_fbo, self._shadow_map,
                        *([self._images] if self._images is not None else []), *self._buffers.values()):
                obj.release()
        self._buffers.clear()
        if self._own_ctx:
            self.ctx.release()

    def _upload(self, binding: int, data: np.ndarray) -> None:
        raw = np.ascontiguousarray(data, dtype=np.float32)
        buf = self._buffers.get(binding)
        if buf is None or buf.size < raw.nbytes:
            if buf is not None:
                buf.release()
            buf = self._buffers[binding] = self.ctx.buffer(reserve=max(raw.nbytes, 16))
        buf.write(raw)
        buf.bind_to_storage_buffer(binding)

    def _draw(self, fbo: moderngl.Framebuffer, b: int, *, background: bool, occluders: bool, hair: bool,
              multisampled: bool = False) -> None:
        """Clear ``fbo``, draw the hair shells, the heads and the occluders (depth-tested: surfaces with a
        depth and a class), then the tiles' backgrounds behind them all: at the far plane, so only the pixels
        no surface covers run the background's shader.
        ``multisampled``: the MSAA colour pass (the hairline is blended by alpha-to-coverage there; the
        one-sample geometry pass keeps its exact cut)."""
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self._noise.use(location=0)
        if hair:
            # The heads' depth first: the hair shell behind them is then never shaded.
            writes = fbo.color_mask
            fbo.color_mask = tuple((False,) * 4 for _ in writes)
            fbo.use()
            self._draw_heads(self._depth_vao, b)
            fbo.color_mask = writes
            fbo.use()
            self.ctx.depth_func = "<="  # the heads' colour pass meets its own depth
            # Then the hair (both faces: through the hairline's cut the shell's inside shows, hair around
            # the face): the head's scalp behind it then fails the depth test before it is shaded.
            if multisampled:  # the hairline's coverage as alpha → samples: anti-aliased, not a cut-out edge
                self.ctx.enable_direct(GL_SAMPLE_ALPHA_TO_COVERAGE)
                self._hair_program["coverage_to_alpha"] = 1
            self._hair_vao.render(moderngl.TRIANGLES, instances=b)
            if multisampled:
                self.ctx.disable_direct(GL_SAMPLE_ALPHA_TO_COVERAGE)
                self._hair_program["coverage_to_alpha"] = 0
        self._draw_heads(self._vao, b)
        self.ctx.depth_func = "<"
        if occluders:
            self._occ_vao.render(moderngl.TRIANGLES, vertices=6, instances=b * MAX_OCCLUDERS)
        if background:  # at depth 1.0: passes '<=' only where the cleared depth is left
            self.ctx.depth_func = "<="
            if self._images is not None:
                self._images.use(location=1)
            self._bg_vao.render(moderngl.TRIANGLES, vertices=6, instances=b)
            self.ctx.depth_func = "<"

    def _draw_heads(self, vao: moderngl.VertexArray, b: int) -> None:
        """The heads of ``b`` instances: closed surfaces with their back faces culled, then the rim."""
        # Triangles are wound counter-clockwise seen from outside in camera space (x right, y down):
        # clockwise in GL's window space, whose y points up.
        self.ctx.front_face = "cw"
        self.ctx.enable(moderngl.CULL_FACE)
        vao.render(moderngl.TRIANGLES, vertices=3 * self._n_closed, instances=b)
        self.ctx.disable(moderngl.CULL_FACE)
        n_rim = len(self.model.triangles) - self._n_closed
        if n_rim:
            vao.render(moderngl.TRIANGLES, first=3 * self._n_closed, vertices=3 * n_rim, instances=b)

    def _draw_shadows(self, b: int, hair: bool) -> None:
        """Depth from the light into each sample's shadow tile: the heads, then the hair shells (both
        faces: no light leaks through a mesh seen edge-on)."""
        self._shadow_fbo.use()
        self._shadow_fbo.clear(depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.disable(moderngl.CULL_FACE)
        self._noise.use(location=0)
        for vao in self._shadow_vaos[:1 + hair]:
            vao.render(moderngl.TRIANGLES, instances=b)

    def _blend_edges(self, b: int, first_tile: int) -> None:
        """The ``edges`` pass: the one-sample colour, blended across the edges of the exact buffers."""
        program, vao, fbo, _ = self._edges
        fbo.use()
        self.ctx.disable(moderngl.DEPTH_TEST)
        program["first_tile"] = first_tile
        self._targets[0].use(location=0)  # colour
        self._targets[2].use(location=1)  # class
        vao.render(moderngl.TRIANGLES, vertices=6, instances=b)

    def _upload_images(self, params: dict[str, np.ndarray]) -> None:
        """Image backgrounds of the batch as one texture layer per instance (only if it has any)."""
        rows = params["background"][:, BACKGROUND["source"]] == BACKGROUND_SOURCES.index("image")
        if not rows.any():
            return
        if self.backgrounds is None:
            raise ConfigError("these parameters show background images, but the renderer has no folder; "
                              "pass backgrounds=BackgroundImages.scan(DIR) (--backgrounds DIR)")
        size, b = self.settings.image_size, len(rows)
        layers = np.zeros((b, size, size, 4), np.uint8)
        layers[rows, ..., :3] = self.backgrounds.crops(params["background"][rows],
                                                       params["background_sha256"][rows], size)
        if self._images is None or self._images.size[2] < b:
            if self._images is not None:
                self._images.release()
            self._images = self.ctx.texture_array((size, size, self.faces_per_draw), 4)
        self._images.write(layers.tobytes(), viewport=(0, 0, 0, size, size, b))

    def geometry(self, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-space vertices, unit normals and linear albedo, each (B, V, 3) float32 numpy.

        Computed with torch on ``self.device`` when it is not the CPU (e.g. CUDA), else with numpy.
        """
        with self._timed("geometry"):
            return self._geometry(params)

    def _geometry(self, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.device != "cpu":
            t = to_torch({k: params[k] for k in ("identity", "expression", "albedo", "pose")}, self.device)
            verts = camera_vertices(self.model, t)
            out = verts, vertex_normals(verts, self.model.triangles), self.model.albedo(t["albedo"])
            return tuple(a.float().cpu().numpy() for a in out)  # type: ignore[return-value]
        verts = camera_vertices(self.model, params)
        return verts, vertex_normals(verts, self.model.triangles), self.model.albedo(params["albedo"])

    def render(self, params: dict[str, np.ndarray], *, slot: int | None = None) -> RenderOutput:
        """Render a parameter batch (the sampler's / a shard's layout).

        ``slot=None``: any batch size, drawn ``faces_per_draw`` at a time. ``slot=s``: the batch
        (at most ``faces_per_draw - s`` samples) occupies slots ``s, s+1, …`` of a full-size batch:
        geometry is computed in a ``faces_per_draw``-row batch and faces drawn in those tiles, so a
        sample's result depends only on its slot, never on which other samples share the batch.
        """
        params = {**scene_defaults(len(params["pose"])), **params}
        if not self._occlusion_ready and (params["material"][:, 2] > 0).any():
            self._compute_occlusion()
        with self.ctx:  # make our context current: another one may have been created since (generate's check)
            return self._render(params, slot)

    def _compute_occlusion(self) -> None:
        from .occlusion import vertex_occlusion  # renders with a FaceRenderer of its own

        occlusion = vertex_occlusion(self.model, self.ctx)  # enters and leaves the context itself
        with self.ctx:
            self._occlusion.write(occlusion)
        self._occlusion_ready = True

    def _render(self, params: dict[str, np.ndarray], slot: int | None) -> RenderOutput:
        n, f = len(params["pose"]), self.faces_per_draw
        if slot is not None:
            if not (0 <= slot and slot + n <= f):
                raise ConfigError(f"slots {slot}..{slot + n - 1} do not fit in a batch of {f}")
            rows = np.clip(np.arange(f) - slot, 0, n - 1)  # pad with copies of the first/last sample
            geometry = tuple(g[slot:slot + n] for g in self.geometry({k: v[rows] for k, v in params.items()}))
            return self._render_chunk(params, geometry, first_tile=slot)
        parts = [self._render_chunk(chunk, self.geometry(chunk)) for chunk in
                 ({k: v[s:s + f] for k, v in params.items()} for s in range(0, n, f))]
        if len(parts) == 1:
            return parts[0]
        fields = RenderOutput.__dataclass_fields__
        return RenderOutput(**{f: None if getattr(parts[0], f) is None
                               else np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def _render_chunk(self, params: dict[str, np.ndarray], geometry: tuple[np.ndarray, ...],
                      first_tile: int = 0) -> RenderOutput:
        b, size = len(params["pose"]), self.settings.image_size
        verts, normals, albedo = geometry
        k = params["intrinsics"]
        with self._timed("upload"):
            cams = np.stack([k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]], axis=1)
            for binding, data in enumerate((verts, normals, albedo, cams, params["light"], params["background"],
                                            params["background_shapes"], params["material"], params["occluders"],
                                            params["hair"], params["facial_hair"], params["clothes"],
                                            texture_seeds(params), params["eyes"],
                                            shadow_frames(verts, params["light"], params["shadow"],
                                                          self._shadow_framed))):
                self._upload(binding, data)
            self._upload_images(params)
            for program in (self._program, self._hair_program, self._depth_program, *self._shadow_programs):
                program["first_tile"] = first_tile
            self._bg_program["first_tile"] = first_tile
            self._occ_program["first_tile"] = first_tile
        occluders = bool((params["occluders"][..., 0] > 0).any())
        hair = self._hair_vao is not None and bool((params["hair"][:, HAIR["coverage"]] > 0.5).any())
        # Restored below: a released renderer's framebuffer must not stay bound on a shared context.
        previous = self.ctx.fbo or self.ctx.detect_framebuffer(0)
        with self._timed("draw"):
            for plane in range(4):
                self.ctx.enable_direct(GL_CLIP_DISTANCE0 + plane)
            self.ctx.disable(moderngl.CULL_FACE)  # a shared context may have it on; _draw culls the heads only
            if (params["shadow"] > 0).any():
                self._draw_shadows(b, hair)
            self._shadow_map.use(location=2)
            if self._msaa:
                self._draw(self._fbo, b, background=False, occluders=occluders, hair=hair)
                self._draw(self._msaa[0], b, background=True, occluders=occluders, hair=hair, multisampled=True)
                self.ctx.copy_framebuffer(self._msaa[1], self._msaa[0])
                image_fbo = self._msaa[1]
            else:
                self._draw(self._fbo, b, background=True, occluders=occluders, hair=hair)
                image_fbo = self._fbo
            if self._edges:
                self._blend_edges(b, first_tile)
                image_fbo = self._edges[2]
            if self.settings.profile:
                self.ctx.finish()
        error = self.ctx.error  # reading it clears it
        if error != "GL_NO_ERROR":
            raise RenderError(f"OpenGL error while rendering: {error}")

        def read(attachment: int, components: int, dtype: str, fbo: moderngl.Framebuffer = self._fbo) -> np.ndarray:
            raw = fbo.read(components=components, attachment=attachment, dtype=dtype)
            atlas = np.frombuffer(raw, dtype=np.uint8 if dtype == "f1" else np.float32)
            cols, rows = self.grid
            tiles = atlas.reshape(rows, size, cols, size, components).swapaxes(1, 2)
            return tiles.reshape(rows * cols, size, size, components)[first_tile:first_tile + b]

        with self._timed("readback"):
            depth = read(1, 1, "f4")[..., 0].copy()
            image = read(0, 4, "f1", image_fbo)[..., :3].copy()
            segmentation = read(2, 1, "f1")[..., 0].copy()
            normals = read(3, 4, "f4")[..., :3].copy() if self.settings.normals else None
            pncc = read(len(self._targets) - 1, 4, "f4")[..., :3].copy() if self.settings.pncc else None
            previous.use()
        with self._timed("compose"):
            mask = np.isin(segmentation, FACE_IDS)
            lm = self.model.landmark_indices
            xy = project(verts[:, lm], k)
            z = verts[:, lm, 2]
            tolerance = np.maximum(self.settings.landmark_tolerance_mm, 2.0 * z / k[:, 0, 0, None])
            visible = landmark_visibility(xy, z, depth, tolerance)
        return RenderOutput(
            image=image, depth=depth, mask=mask.astype(np.uint8), segmentation=segmentation,
            landmarks_xy=xy.astype(np.float32), landmarks_visible=visible,
            normals=normals, pncc=pncc,
        )
