"""CoarseNet's feedback loop: render the current estimate, refine it, repeat.

One renderer (:class:`FeedbackRenderer`) and one loop (:func:`refine`), used alike by training
(:mod:`synthface.train`, which supervises every refinement) and inference (:mod:`synthface.predict`,
which keeps the last). The networks themselves (:mod:`synthface.nets`) never touch OpenGL: they
receive the feedback as tensors.

Estimates are normalized parameter vectors (B, N) (:class:`~synthface.targets.ParameterNormalizer`);
the *scene* is what CoarseNet does not regress but the renderer needs — K, albedo, light,
material, brows — as numpy arrays in the shard layout (:func:`default_scene` fills it for a photo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .gl import create_context
from .model import MorphableModel
from .nets import coarse_step
from .params import MATERIAL_FIELDS, N_SH
from .render import FaceRenderer, RenderOutput, RenderSettings
from .sampling import typical_facial_hair
from .shading import srgb_to_linear
from .targets import ParameterNormalizer


def feedback_settings(image_size: int, faces_per_draw: int = 64) -> RenderSettings:
    """Render settings for CoarseNet's feedback (PNCC and normals) at ``image_size``."""
    return RenderSettings(image_size=image_size, faces_per_draw=faces_per_draw, normals=True, pncc=True)


def default_scene(model: MorphableModel, intrinsics: np.ndarray,
                  scene: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """What the renderer needs besides identity/expression/pose: K, plus mean albedo, typical brows
    (:func:`~synthface.sampling.typical_facial_hair`), unit ambient light and a matte material (no
    highlight, no occlusion) unless ``scene`` gives them (the background is the renderer's plain
    default unless given). Depth, mask, PNCC and normals depend on none of them, so a photo needs
    nothing but its K."""
    k = np.ascontiguousarray(intrinsics, dtype=np.float32)
    b = len(k)
    light = np.zeros((b, N_SH, 3), np.float32)
    light[:, 0] = 1.0
    out = {"albedo": np.zeros((b, model.n_albedo), np.float32), "light": light,
           "material": np.zeros((b, len(MATERIAL_FIELDS)), np.float32),
           "facial_hair": np.repeat(typical_facial_hair()[None], b, axis=0)}
    out.update({key: np.asarray(v) for key, v in (scene or {}).items()})
    out["intrinsics"] = k
    return out


def render_mean_albedo(renderer: FaceRenderer, params: Mapping[str, np.ndarray],
                       intrinsics: np.ndarray) -> tuple[RenderOutput, torch.Tensor]:
    """Render ``params`` (identity, expression, pose) with :func:`default_scene`'s look; returns the
    output and the linear albedo ρ (B, 3, H, W) float32, 0 off the face: FineNet's SfS albedo — the
    model's mean albedo, or that of ``params["albedo"]`` (coefficients) when given.

    Under unit ambient light the shading is 1, so the sRGB image is the albedo itself.
    """
    out = renderer.render({**default_scene(renderer.model, intrinsics), **params})
    rgb = torch.from_numpy(out.image.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return out, srgb_to_linear(rgb) * torch.from_numpy(out.mask[:, None].astype(np.float32))


class FeedbackRenderer:
    """Draws normalized estimates: CoarseNet's feedback and the coarse maps FineNet starts from.

    Owns a :class:`~synthface.render.FaceRenderer` with normals and PNCC on its own GL context
    (EGL device ``gl_device``) unless ``renderer`` is given (then it stays the caller's). Geometry runs
    on ``device`` (torch) when it is a CUDA device, else with numpy. Call :meth:`release`, or use ``with``.
    """

    def __init__(self, model: MorphableModel, normalizer: ParameterNormalizer, image_size: int, *,
                 faces_per_draw: int = 64, device: str | torch.device = "cpu", gl_device: int = 0,
                 renderer: FaceRenderer | None = None) -> None:
        self.model, self.normalizer, self.device = model, normalizer, torch.device(device)
        self._ctx: Any = None
        if renderer is not None:
            s = renderer.settings
            if not (s.normals and s.pncc) or s.image_size != image_size:
                raise ValueError(f"the renderer must draw normals and PNCC at {image_size} px "
                                 f"(feedback_settings), not {s}")
            self.renderer = renderer
            return
        ctx = create_context(gl_device)
        try:
            geometry = "cpu" if self.device.type == "cpu" else str(self.device)
            self.renderer = FaceRenderer(model, feedback_settings(image_size, faces_per_draw), ctx=ctx,
                                         device=geometry)
        except BaseException:
            ctx.release()
            raise
        self._ctx = ctx

    @property
    def image_size(self) -> int:
        return self.renderer.settings.image_size

    def release(self) -> None:
        """Free the renderer and GL context this object created (a given renderer stays the caller's)."""
        if self._ctx is not None:
            self.renderer.release()
            self._ctx.release()
            self._ctx = None

    def __enter__(self) -> FeedbackRenderer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def feedback(self, estimate: Tensor, scene: Mapping[str, np.ndarray]) -> Tensor:
        """(B, 6, H, W) float32 PNCC and normals of ``estimate`` (B, N), on its device (not differentiable)."""
        params = {**scene, **self.normalizer.to_params(estimate, scene["intrinsics"])}
        out = self.renderer.render(params)
        feedback = np.concatenate([out.pncc, out.normals], axis=-1).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(feedback)).to(estimate.device)

    def maps(self, estimate: Tensor, scene: Mapping[str, np.ndarray], *,
             own_albedo: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Depth (B, 1, H, W) mm, mask (B, 1, H, W) and linear albedo ρ (B, 3, H, W) of ``estimate``
        (ρ: :func:`render_mean_albedo`): the model's mean albedo, or with ``own_albedo`` the scene's
        albedo, material and brows — drawn where the estimate puts the face."""
        k = scene["intrinsics"]
        params = self.normalizer.to_params(estimate, k)
        if own_albedo:  # the sample's albedo, brows and stubble, darkened by its occlusion as the renderer drew it
            for key in ("albedo", "material", "facial_hair"):
                params[key] = scene[key]
        out, rho = render_mean_albedo(self.renderer, params, k)
        depth = torch.from_numpy(out.depth[:, None]).to(estimate.device)
        mask = torch.from_numpy(out.mask[:, None].astype(np.float32)).to(estimate.device)
        return depth, mask, rho.to(estimate.device)


def refine(net: Callable[[Tensor], Tensor], image: Tensor, feedback: Callable[[Tensor], Tensor], iterations: int,
           start: Tensor | None = None, *, detach: bool = True) -> Iterator[Tensor]:
    """The estimates (B, N) after each of ``iterations`` CoarseNet refinements of ``image`` (B, 3, H, W).

    Refinement ``t`` renders ``feedback`` of the previous estimate (``start``; zeros = the training
    data's mean) and adds the network's correction (:func:`~synthface.nets.coarse_step`).
    Rendering is not differentiable; ``detach`` also cuts the gradient between refinements, so each
    one learns to correct the estimate it was given. A generator: training runs each refinement's
    backward pass before asking for the next (one graph in memory); inference keeps the last.
    """
    estimate = start if start is not None else torch.zeros(len(image), _n_params(net), device=image.device)
    for _ in range(iterations):
        previous = estimate.detach() if detach else estimate
        estimate = coarse_step(net, image, feedback(previous.detach()), previous)
        yield estimate


def last(estimates: Iterator[Tensor]) -> Tensor:
    """The final estimate of :func:`refine`."""
    final = None
    for final in estimates:  # noqa: B007
        pass
    if final is None:
        raise ValueError("no refinement ran (iterations = 0)")
    return final


def _n_params(net: Any) -> int:
    """N of a CoarseNet, also through DistributedDataParallel's ``module``."""
    return int(getattr(net, "module", net).n_params)
