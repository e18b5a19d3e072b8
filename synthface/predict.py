"""Inference: load a trainer checkpoint and reconstruct faces (CoarseNet → rendering → FineNet).

A checkpoint is the ``torch.save``d dict the trainer writes (``format="synthface-checkpoint"``,
``version`` :data:`~synthface.checkpoint.CHECKPOINT_VERSION`; see :func:`load_checkpoint`). It is
read with ``torch.load(weights_only=True)`` (plus numpy's array reconstructors, for RNG states): a
checkpoint never runs code when loaded.

:class:`Predictor` runs CoarseNet iteratively from the data mean, each step seeing a rendering
(PNCC, normals) of the current estimate (:mod:`synthface.feedback`: the loop training uses too),
renders the final estimate's depth and mask with
:class:`~synthface.render.FaceRenderer`, then refines that depth with FineNet when the checkpoint
has one. :func:`render_prediction` turns any parameter estimate into the same
:class:`Prediction`, so baselines (:func:`mean_face_prediction`) and oracles (the ground truth
itself) are scored by exactly the code path a network's estimate takes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import read_checkpoint
from .errors import CheckpointError
from .feedback import FeedbackRenderer, default_scene, last, refine
from .framing import training_fraction
from .geometry import camera_vertices
from .model import MorphableModel
from .nets import CoarseNet, FineNet
from .render import FaceRenderer
from .targets import PARAM_VECTOR, ParameterNormalizer


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """The networks of a trainer checkpoint, built and in eval mode, with what is needed to use them."""

    path: Path
    stage: str
    """``"coarse"`` or ``"fine"``: the training stage the checkpoint was written in."""
    step: int
    coarse: CoarseNet
    coarse_iterations: int
    """CoarseNet refinement steps at inference (as trained)."""
    fine: FineNet | None
    """None when FineNet was not trained yet (a coarse-stage checkpoint)."""
    normalizer: ParameterNormalizer
    model_name: str
    model_sha256: str
    image_size: int
    """Image size the networks were trained on (CoarseNet and FineNet accept any size ≥ 32)."""
    train_config: dict[str, Any] = field(default_factory=dict)
    data: list[Any] = field(default_factory=list)

    @property
    def face_fraction(self) -> float:
        """The share of the image side the training data's faces span (their framing; photo crops reproduce it)."""
        return training_fraction(self.data)


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a trainer checkpoint and build its networks (eval mode, no gradients) on ``device``.

    Every problem (missing, truncated or foreign file, other version, missing keys, weights that
    do not fit the recorded architecture, no CoarseNet) raises :class:`CheckpointError` naming
    the file. The model check needs the model in use: :func:`check_model`.
    """
    path = Path(path)
    ckpt = read_checkpoint(path)
    coarse, fine = ckpt.coarse_net(path), ckpt.fine_net(path)
    for net in (coarse, fine):
        if net is not None:
            net.to(device).eval().requires_grad_(False)
    return Checkpoint(path=path, stage=ckpt.stage, step=ckpt.step, coarse=coarse,
                      coarse_iterations=ckpt.coarse_iterations, fine=fine, normalizer=ckpt.normalizer,
                      model_name=ckpt.model_name, model_sha256=ckpt.model_sha256, image_size=ckpt.image_size,
                      train_config=ckpt.train_config, data=ckpt.data)


def check_model(checkpoint: Checkpoint, model: MorphableModel) -> None:
    """Refuse a model other than the one the checkpoint was trained on: its parameters would mean other shapes."""
    if checkpoint.model_sha256 != model.sha256:
        raise CheckpointError(
            f"{checkpoint.path}: trained on model {checkpoint.model_name!r} (sha256 {checkpoint.model_sha256[:12]}…) "
            f"but the model in use is {model.name!r} (sha256 {model.sha256[:12]}…); pass --model with the "
            "model file the checkpoint was trained on")
    sizes = dict(zip(checkpoint.normalizer.names, checkpoint.normalizer.sizes, strict=True))
    if (sizes["identity"], sizes["expression"]) != (model.n_identity, model.n_expression):
        raise CheckpointError(f"{checkpoint.path}: parameter layout {sizes} does not fit model {model.name!r} "
                              f"({model.n_identity} identity, {model.n_expression} expression components)")


@dataclass(frozen=True, eq=False)
class Prediction:
    """A reconstructed batch: parameters and the rendered geometry, all numpy."""

    params: dict[str, np.ndarray]
    """``identity`` (B, K_id), ``expression`` (B, K_exp), ``pose`` (B, 6): the shard layout, physical units."""
    coarse_depth: np.ndarray
    """(B, H, W) float32 camera z in mm of the rendered estimate; 0 where it has no surface."""
    mask: np.ndarray
    """(B, H, W) bool: where the rendered estimate covers the pixel centre."""
    vertices: np.ndarray
    """(B, V, 3) float32 camera-space vertices in mm."""
    landmarks_xy: np.ndarray
    """(B, 68, 2) float32 the estimate's landmarks in the image's pixels (``K·X/z``, top-left corner origin)."""
    landmarks_visible: np.ndarray
    """(B, 68) bool: inside the image and not hidden by the estimated face itself."""
    fine_depth: np.ndarray | None = None
    """(B, H, W) float32 FineNet's refined depth (equal to the coarse depth off the mask), or None."""

    @property
    def depth(self) -> np.ndarray:
        """The best depth available: FineNet's if there is one, else the coarse one."""
        return self.coarse_depth if self.fine_depth is None else self.fine_depth


def render_prediction(renderer: FaceRenderer, params: Mapping[str, np.ndarray], intrinsics: np.ndarray,
                      scene: Mapping[str, np.ndarray] | None = None) -> Prediction:
    """Depth, mask and vertices of a parameter estimate (``identity``, ``expression``, ``pose``; physical units)."""
    blocks = {n: np.ascontiguousarray(params[n], dtype=np.float32) for n in PARAM_VECTOR}
    full = {**default_scene(renderer.model, intrinsics, scene), **blocks}
    out = renderer.render(full)
    return Prediction(params=blocks, coarse_depth=out.depth, mask=out.mask.astype(bool),
                      vertices=np.asarray(camera_vertices(renderer.model, full), np.float32),
                      landmarks_xy=out.landmarks_xy, landmarks_visible=out.landmarks_visible)


def mean_face_prediction(renderer: FaceRenderer, pose: np.ndarray, intrinsics: np.ndarray,
                         scene: Mapping[str, np.ndarray] | None = None) -> Prediction:
    """The mean face (identity = expression = 0) at ``pose`` (B, 6) with the camera K (B, 3, 3).

    With the training data's mean pose it is the baseline of :mod:`synthface.evaluate` (a predictor
    that ignores the image); with the true pose, the shape-only reference.
    """
    pose = np.asarray(pose, np.float32)
    b, model = len(pose), renderer.model
    zeros = {"identity": np.zeros((b, model.n_identity), np.float32),
             "expression": np.zeros((b, model.n_expression), np.float32), "pose": pose}
    return render_prediction(renderer, zeros, intrinsics, scene)


class Predictor:
    """Reconstructs faces with a checkpoint's networks; owns a renderer unless given one (call :meth:`close`).

    ``renderer`` (optional) must render ``model`` with normals and PNCC
    (:func:`~synthface.feedback.feedback_settings`) at the images' size; by default one is created on
    first use and re-created if the image size changes. The networks are moved to ``device`` (in
    place: the checkpoint's modules are shared).
    """

    def __init__(self, checkpoint: Checkpoint, model: MorphableModel, *, device: str | torch.device = "cpu",
                 renderer: FaceRenderer | None = None) -> None:
        check_model(checkpoint, model)
        self.checkpoint, self.model, self.device = checkpoint, model, torch.device(device)
        self.coarse = checkpoint.coarse.to(self.device)
        self.fine = checkpoint.fine.to(self.device) if checkpoint.fine is not None else None
        self._given = renderer
        self._feedback: FeedbackRenderer | None = None
        if renderer is not None:
            self._feedback = FeedbackRenderer(model, checkpoint.normalizer, renderer.settings.image_size,
                                              device=self.device, renderer=renderer)

    def feedback(self, image_size: int) -> FeedbackRenderer:
        """The feedback renderer for images of ``image_size`` pixels."""
        f = self._feedback
        if f is not None and f.image_size == image_size:
            return f
        if self._given is not None:
            raise ValueError(f"the given renderer draws {self._given.settings.image_size} px but the images are "
                             f"{image_size} px")
        if f is not None:
            f.release()
        self._feedback = FeedbackRenderer(self.model, self.checkpoint.normalizer, image_size, device=self.device)
        return self._feedback

    def renderer(self, image_size: int) -> FaceRenderer:
        """The renderer for images of ``image_size`` pixels."""
        return self.feedback(image_size).renderer

    def close(self) -> None:
        """Release the renderer this predictor created (a given one stays the caller's)."""
        if self._feedback is not None:
            self._feedback.release()
            self._feedback = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @torch.no_grad()
    def estimate(self, images: torch.Tensor, scene: Mapping[str, np.ndarray]) -> torch.Tensor:
        """CoarseNet's final normalized estimate (B, N), refined from zeros (the training data's mean)."""
        feedback = self.feedback(images.shape[-1])
        return last(refine(self.coarse, images, lambda e: feedback.feedback(e, scene),
                           self.checkpoint.coarse_iterations))

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray, intrinsics: torch.Tensor | np.ndarray,
                scene: Mapping[str, np.ndarray] | None = None) -> Prediction:
        """Reconstruct a batch: images (B, 3, H, W) float sRGB in [0, 1] (H = W), K (B, 3, 3) in pixels.

        ``scene`` may add albedo/light/background (shard layout); they change nothing the networks see.
        """
        images = torch.as_tensor(images, dtype=torch.float32).to(self.device)
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be (B, 3, H, H), got {tuple(images.shape)}")
        k = np.asarray(intrinsics.detach().cpu() if isinstance(intrinsics, torch.Tensor) else intrinsics,
                       np.float32)
        full = default_scene(self.model, k, scene)
        params = self.checkpoint.normalizer.to_params(self.estimate(images, full), k)
        pred = render_prediction(self.renderer(images.shape[-1]), params, k, full)
        if self.fine is None:
            return pred
        z = torch.from_numpy(pred.coarse_depth).to(self.device)[:, None]
        m = torch.from_numpy(pred.mask).to(self.device)[:, None]
        fine = self.fine(images, z, torch.from_numpy(k).to(self.device), m)[:, 0]
        return dataclasses.replace(pred, fine_depth=fine.float().cpu().numpy())
