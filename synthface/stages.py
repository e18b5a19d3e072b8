"""The two training stages as objects the one loop (:meth:`synthface.train._Trainer.run_stage`) drives.

A stage owns its networks, its data and its loss: :meth:`~Stage.batches` yields what each remaining
step reads, :meth:`~Stage.step` runs that step's forward and backward and returns its metrics,
:meth:`~Stage.validate` scores the held-out split, :meth:`~Stage.weights` is what a checkpoint stores,
:meth:`~Stage.finish` hands on what later stages need.
The loop owns the optimizer, the schedule, logging, validation times and checkpoints.

* :class:`CoarseStage` — CoarseNet regresses the normalized parameter vector, refined with the
  feedback renderer; every refinement is supervised (:func:`~synthface.losses.coarse_loss`).
* :class:`FineStage` — CoarseNet frozen; FineNet refines the depth of its final estimate under the
  shape-from-shading loss (:func:`~synthface.nets.sfs_loss`), on shards and/or unlabelled photos.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from .batches import StepBatches, loader
from .data import ShardDataset
from .feedback import default_scene, last, refine
from .losses import coarse_loss, column_weights, masked_depth_error
from .nets import FineNet, sfs_loss
from .shading import srgb_to_linear

if TYPE_CHECKING:
    from .train import _Trainer

SCENE = ("albedo", "light", "material", "facial_hair", "intrinsics")
"""Shard entries CoarseNet does not regress but the renderer needs (taken from the sample)."""
COARSE_FIELDS = ("image", "params", "landmarks", "landmarks_visible", *SCENE)
FINE_FIELDS = ("image", "depth", "mask", *SCENE)


@dataclass
class ResumeState:
    """What a checkpoint restores: the stage being trained and its position."""

    stage: str = "coarse"
    step: int = 0
    stage_step: int = 0
    coarse: dict[str, Any] | None = None
    fine: dict[str, Any] | None = None
    optimizer: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None


class Stage(Protocol):
    name: str
    net: torch.nn.Module
    """The network this stage trains (unwrapped)."""
    resuming: bool
    """Whether the checkpoint being resumed stopped inside this stage (its optimizer state applies)."""
    start: int
    first_step: int
    train_ds: ShardDataset
    val_ds: ShardDataset

    def batches(self) -> Iterator[Any]: ...

    def step(self, batch: Any, ddp: torch.nn.Module) -> dict[str, float]: ...

    def validate(self) -> dict[str, float]: ...

    def weights(self) -> tuple[dict[str, Any], dict[str, Any] | None]: ...

    def finish(self) -> None:
        """After the stage's last step (what later stages take from it)."""


def _scene(batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(batch[k].numpy()) for k in SCENE}


def _mean(batches: Iterator[dict[str, float]]) -> dict[str, float]:
    sums: dict[str, float] = {}
    n = 0
    for metrics in batches:
        for key, v in metrics.items():
            sums[key] = sums.get(key, 0.0) + v
        n += 1
    return {k: v / n for k, v in sums.items()} if n else {}


class CoarseStage:
    """CoarseNet, supervised at each of its ``coarse_iterations`` refinements."""

    name = "coarse"

    def __init__(self, run: _Trainer, state: ResumeState) -> None:
        self.run, c = run, run.config
        net: torch.nn.Module = run.coarse_net(state.coarse)
        if run.proc.world > 1 and run.coarse_args["norm"] == "batch" and run.device.type == "cuda":
            # Batch statistics over all processes (SyncBatchNorm is CUDA-only: on CPU each rank keeps its own).
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net
        self.resuming = state.stage == "coarse"
        self.start, self.first_step = state.stage_step, state.step
        self.train_ds, self.val_ds = run.datasets(COARSE_FIELDS, run.normalizer, degrade=c.degrade)
        assert run.normalizer is not None
        self.normalizer = run.normalizer
        self.column_weights = column_weights(run.normalizer, c.shape_weight)

    def batches(self) -> Iterator[dict[str, Any]]:
        c, proc = self.run.config, self.run.proc
        sampler = StepBatches(len(self.train_ds), c.batch_size, c.seed, "coarse", self.start, c.steps,
                              proc.rank, proc.world)
        return loader(self.train_ds, sampler, c.num_workers, self.run.device.type == "cuda")

    def step(self, batch: dict[str, Any], ddp: torch.nn.Module) -> dict[str, float]:
        run, c = self.run, self.run.config
        renderer, device, iterations = run.renderer, run.device, run.coarse_iterations
        assert renderer is not None
        image = batch["image"].to(device, non_blocking=True)
        target = batch["params"].to(device, non_blocking=True)
        k = batch["intrinsics"].to(device, non_blocking=True)
        landmarks = (batch["landmarks"].to(device, non_blocking=True),
                     batch["landmarks_visible"].to(device, non_blocking=True))
        scene = _scene(batch)
        refinements = refine(ddp, image, lambda e: renderer.feedback(e, scene), iterations)
        metrics: dict[str, float] = {}
        total = 0.0
        for t in range(iterations):
            # Gradients of the T refinements accumulate locally; DDP averages them once, in the last backward.
            sync = ddp.no_sync() if ddp is not self.net and t < iterations - 1 else contextlib.nullcontext()
            with sync:  # around the refinement's forward (next) and its backward
                new = next(refinements)
                loss, terms = coarse_loss(run.model, self.normalizer, new, target, k, c.geometric_weight,
                                          self.column_weights, c.landmark_weight, landmarks)
                (loss / iterations).backward()
            total += loss.item() / iterations
            metrics[f"param_mse_t{t + 1}"] = terms["mse"].item()
            metrics[f"vertex_mm_t{t + 1}"] = terms["vertex_mm"].item()
            metrics[f"landmark_side_t{t + 1}"] = terms["landmark_side"].item()
        metrics["loss"] = total
        return metrics

    def validate(self) -> dict[str, float]:
        run = self.run
        self.net.eval()  # BatchNorm (norm="batch") uses its running statistics, as at inference

        def scores() -> Iterator[dict[str, float]]:
            for batch in run.val_batches(self.val_ds):
                image, target = batch["image"].to(run.device), batch["params"].to(run.device)
                est = coarse_estimate(run, self.net, image, _scene(batch))
                k = batch["intrinsics"].to(run.device)
                landmarks = (batch["landmarks"].to(run.device), batch["landmarks_visible"].to(run.device))
                _, terms = coarse_loss(run.model, self.normalizer, est, target, k, 0.0, landmarks=landmarks)
                yield {"param_mse": terms["mse"].item(), "vertex_mm": terms["vertex_mm"].item(),
                       "landmark_side": terms["landmark_side"].item()}

        with torch.no_grad():
            out = _mean(scores())
        self.net.train()
        return out

    def weights(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return self.net.state_dict(), None

    def finish(self) -> None:
        """The fine stage of this run starts from the CoarseNet just trained."""
        self.run.coarse_weights = self.net.state_dict()


def coarse_estimate(run: _Trainer, net: torch.nn.Module, image: torch.Tensor,
                    scene: dict[str, np.ndarray]) -> torch.Tensor:
    """CoarseNet's final estimate (B, N) of ``image`` (no gradient)."""
    renderer = run.renderer
    assert renderer is not None
    with torch.no_grad():
        return last(refine(net, image, lambda e: renderer.feedback(e, scene), run.coarse_iterations))


class FineStage:
    """FineNet under the SfS loss, behind a frozen CoarseNet; each step ``batch_size − real_batch``
    shard samples and ``real_batch`` photos, each in its own fixed order."""

    name = "fine"

    def __init__(self, run: _Trainer, state: ResumeState) -> None:
        self.run, c = run, run.config
        # This process's freshly trained CoarseNet if it ran the coarse stage, else the checkpoint's.
        self.coarse = run.coarse_net(run.coarse_weights or state.coarse)
        self.coarse.eval().requires_grad_(False)
        torch.manual_seed(c.seed + 1)
        net = FineNet(4, widths=c.fine_widths, head=c.fine_head)
        self.resuming = state.stage == "fine"
        if self.resuming and state.fine is not None:
            net.load_state_dict(state.fine)
        self.net = net.to(run.device)
        self.train_ds, self.val_ds = run.datasets(FINE_FIELDS, None)
        self.start = state.stage_step if self.resuming else 0
        self.first_step = state.step if self.resuming else run.step

    def batches(self) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        c, proc, pin = self.run.config, self.run.proc, self.run.device.type == "cuda"
        n_real = c.real_batch
        shards = (loader(self.train_ds, StepBatches(len(self.train_ds), c.batch_size - n_real, c.seed, "fine",
                                                     self.start, c.steps, proc.rank, proc.world), c.num_workers, pin)
                  if c.batch_size > n_real else None)
        photos = (loader(self.run.photos, StepBatches(len(self.run.photos), n_real, c.seed, "real", self.start,
                                                       c.steps, proc.rank, proc.world), c.num_workers, pin)
                  if n_real and self.run.photos is not None else None)
        for _ in range(self.start, c.steps):
            yield next(shards) if shards else None, next(photos) if photos else None

    def step(self, batch: tuple[dict[str, Any] | None, dict[str, Any] | None],
             ddp: torch.nn.Module) -> dict[str, float]:
        metrics, loss = self.loss(ddp, *batch)
        loss.backward()
        return metrics

    def loss(self, fine: torch.nn.Module, batch: Mapping[str, torch.Tensor] | None,
             photos: Mapping[str, torch.Tensor] | None = None) -> tuple[dict[str, float], torch.Tensor]:
        """SfS loss (differentiable) of shard samples and/or photos in one batch, and its metrics; the
        supervised depth errors (mm) are over the shard samples."""
        run, config, device = self.run, self.run.config, self.run.device
        assert run.renderer is not None
        parts = []
        if batch is not None:
            parts.append((batch["image"], _scene(batch)))
        if photos is not None:  # a photo has only its crop and K: mean albedo, unit light (see default_scene)
            parts.append((photos["image"], default_scene(run.model, photos["intrinsics"].numpy())))
        image = torch.cat([p[0] for p in parts]).to(device, non_blocking=True)
        scene = {key: np.concatenate([p[1][key] for p in parts]) for key in SCENE}
        k = torch.from_numpy(scene["intrinsics"]).to(device)
        est = coarse_estimate(run, self.coarse, image, scene)
        known = config.sfs_appearance == "shard" and batch is not None
        depth_c, mask, rho = run.renderer.maps(est, scene, own_albedo=known)
        depth_hat = fine(image, depth_c, k, mask)
        linear = srgb_to_linear(image)
        n = len(batch["image"]) if batch is not None else 0
        # Where the shards say the face shows (not hair, an occluder, the background), only there is the
        # image shaded as skin; photos have no such map. FineNet itself sees the coarse mask, as at inference.
        shown = None
        if batch is not None and config.sfs_mask == "visible":
            shown = torch.cat([batch["mask"].to(device, mask.dtype), torch.ones_like(mask[n:])])
        # Shard samples (the first n rows) with their own lighting, photos with the solved one; in a
        # mixed batch the two parts weigh by their share of it.
        light = torch.from_numpy(scene["light"][:n]).to(device) if known else None
        material = torch.from_numpy(scene["material"][:n]).to(device) if known else None
        pieces = [(slice(0, len(image)), light, material)] if light is None or n == len(image) else \
            [(slice(0, n), light, material), (slice(n, len(image)), None, None)]
        loss, terms = torch.zeros((), device=device), {}
        for rows, part_light, part_material in pieces:
            share = (rows.stop - rows.start) / len(image)
            part, part_terms = sfs_loss(depth_hat[rows], depth_c[rows], linear[rows], k[rows], mask[rows],
                                        rho[rows], **config.sfs_options, light=part_light,
                                        material=part_material, shown=None if shown is None else shown[rows])
            loss = loss + share * part
            terms = {name: terms.get(name, 0.0) + share * v for name, v in part_terms.items()}
        metrics = {"loss": loss.item(), **{name: v.item() for name, v in terms.items()}}
        if batch is not None:
            truth = batch["depth"].to(device)
            with torch.no_grad():
                metrics["depth_mm"] = masked_depth_error(depth_hat[:n], truth, mask[:n]).item()
                metrics["coarse_depth_mm"] = masked_depth_error(depth_c[:n], truth, mask[:n]).item()
        return metrics, loss

    def validate(self) -> dict[str, float]:
        with torch.no_grad():
            return _mean(self.loss(self.net, batch)[0] for batch in self.run.val_batches(self.val_ds))

    def weights(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        return self.coarse.state_dict(), self.net.state_dict()

    def finish(self) -> None:
        pass

