"""Render parameter batches into image / depth / mask (+ normals, PNCC) and landmarks.

The GPU only rasterizes and shades: geometry (vertices, normals, albedo) comes
from the batched geometry step and is uploaded per batch; one instanced draw
renders up to ``faces_per_draw`` faces into an atlas of tiles (shaders in
``render_shaders/face.*``), which is read back once and cut into samples.
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

from .errors import ConfigError
from .geometry import camera_vertices, project, to_torch, vertex_normals
from .gl import GL_CLIP_DISTANCE0, RenderError, create_context, load_program
from .model import MorphableModel
from .shading import linear_to_srgb


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
    landmark_tolerance_mm: float = 4.0
    """A landmark is hidden if the surface at its pixel is nearer by more than this or by two pixel
    footprints (z / f), whichever is larger: steep surfaces change depth fast across a pixel."""

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 4096:
            raise ConfigError(f"image size {self.image_size} is outside [16, 4096]; choose a size in that range")
        if self.faces_per_draw < 1:
            raise ConfigError(f"faces_per_draw must be at least 1, got {self.faces_per_draw}")


@dataclass(frozen=True)
class RenderOutput:
    """One rendered batch; B samples of H × W pixels (H = W = image size)."""

    image: np.ndarray
    """(B, H, W, 3) uint8 sRGB, background composited."""
    depth: np.ndarray
    """(B, H, W) float32 camera-space z in mm at pixel centres; 0 on background."""
    mask: np.ndarray
    """(B, H, W) uint8, 1 where the face covers the pixel centre."""
    landmarks_xy: np.ndarray
    """(B, 68, 2) float32 pixel coordinates ``K·X/z`` (origin: top-left pixel's corner)."""
    landmarks_visible: np.ndarray
    """(B, 68) bool: inside the image and not hidden by the face itself."""
    normals: np.ndarray | None = None
    """(B, H, W, 3) float32 unit camera-space normals (0 on background), if asked for."""
    pncc: np.ndarray | None = None
    """(B, H, W, 3) float32 PNCC in [0, 1] (0 on background), if asked for."""


def pncc_code(model: MorphableModel) -> np.ndarray:
    """(V, 3) float32: the mean shape's coordinates scaled to [0, 1] per axis (Zhu et al. 2016)."""
    lo, hi = model.mean_shape.min(axis=0), model.mean_shape.max(axis=0)
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


class FaceRenderer:
    """Renders a model's faces with OpenGL; owns its GL objects (call :meth:`release`, or use ``with``)."""

    def __init__(self, model: MorphableModel, settings: RenderSettings | None = None, *,
                 ctx: moderngl.Context | None = None, device: str = "cpu") -> None:
        if not model.has_landmarks:
            raise ConfigError(f"model {model.name!r} has no ibug-68 landmarks, which every shard stores; "
                              "pass --landmarks FILE with 68 vertex indices")
        self.model = model
        self.settings = settings or RenderSettings()
        self.device = device
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
        self.faces_per_draw = min(self.settings.faces_per_draw, per_row * rows)
        self._program = load_program(self.ctx, "face")
        self._program["n_vertices"] = model.n_vertices
        self._program["grid"] = self.grid
        self._program["tile_size"] = (float(size), float(size))
        self._program["depth_range"] = self.settings.depth_range
        self._ibo = self.ctx.buffer(np.ascontiguousarray(model.triangles, dtype=np.uint32))
        self._pncc = self.ctx.buffer(pncc_code(model))
        self._vao = self.ctx.vertex_array(self._program, [(self._pncc, "3f", "in_pncc")], index_buffer=self._ibo)
        atlas = (per_row * size, rows * size)
        # Colour and depth always; normals / PNCC only when asked (fragment outputs without a target
        # are discarded, which saves their bandwidth and readback).
        wanted = [(4, "f1"), (1, "f4")] + [(4, "f4")] * (self.settings.normals or self.settings.pncc) \
            + [(4, "f4")] * self.settings.pncc
        self._targets = [self.ctx.texture(atlas, c, dtype=d) for c, d in wanted]
        self._depth = self.ctx.depth_renderbuffer(atlas)
        self._fbo = self.ctx.framebuffer(color_attachments=self._targets, depth_attachment=self._depth)

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
            for obj in (self._vao, self._fbo, self._depth, *self._targets, self._ibo, self._pncc,
                        *self._buffers.values()):
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
        with self.ctx:  # make our context current: another one may have been created since (generate's check)
            return self._render(params, slot)

    def _render(self, params: dict[str, np.ndarray], slot: int | None) -> RenderOutput:
        n, f = len(params["pose"]), self.faces_per_draw
        if slot is not None:
            if not 0 <= slot and slot + n <= f:
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
            for binding, data in enumerate((verts, normals, albedo, cams, params["light"])):
                self._upload(binding, data)
        # Restored below: a released renderer's framebuffer must not stay bound on a shared context.
        previous = self.ctx.fbo or self.ctx.detect_framebuffer(0)
        with self._timed("draw"):
            self._fbo.use()
            self._fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self.ctx.enable(moderngl.DEPTH_TEST)
            self.ctx.disable(moderngl.CULL_FACE)
            for plane in range(4):
                self.ctx.enable_direct(GL_CLIP_DISTANCE0 + plane)
            self._program["first_tile"] = first_tile
            self._vao.render(moderngl.TRIANGLES, instances=b)
            if self.settings.profile:
                self.ctx.finish()
        error = self.ctx.error  # reading it clears it
        if error != "GL_NO_ERROR":
            raise RenderError(f"OpenGL error while rendering: {error}")

        def read(attachment: int, components: int, dtype: str) -> np.ndarray:
            raw = self._fbo.read(components=components, attachment=attachment, dtype=dtype)
            atlas = np.frombuffer(raw, dtype=np.uint8 if dtype == "f1" else np.float32)
            cols, rows = self.grid
            tiles = atlas.reshape(rows, size, cols, size, components).swapaxes(1, 2)
            return tiles.reshape(rows * cols, size, size, components)[first_tile:first_tile + b]

        with self._timed("readback"):
            depth = read(1, 1, "f4")[..., 0].copy()
            colour = read(0, 4, "f1")[..., :3]
            normals = read(2, 4, "f4")[..., :3].copy() if self.settings.normals else None
            pncc = read(len(self._targets) - 1, 4, "f4")[..., :3].copy() if self.settings.pncc else None
            previous.use()
        with self._timed("compose"):
            mask = depth > 0
            background = np.round(linear_to_srgb(params["background"].astype(np.float32)) * 255).astype(np.uint8)
            image = np.where(mask[..., None], colour, background[:, None, None, :])
            lm = self.model.landmark_indices
            xy = project(verts[:, lm], k)
            z = verts[:, lm, 2]
            tolerance = np.maximum(self.settings.landmark_tolerance_mm, 2.0 * z / k[:, 0, 0, None])
            visible = landmark_visibility(xy, z, depth, tolerance)
        return RenderOutput(
            image=image, depth=depth, mask=mask.astype(np.uint8),
            landmarks_xy=xy.astype(np.float32), landmarks_visible=visible,
            normals=normals, pncc=pncc,
        )
