"""``train``: CoarseNet, then FineNet, on synthface shards (Richardson et al., CVPR 2017).

Stages (each ``TrainConfig.steps`` optimizer steps):

* **coarse** — CoarseNet regresses the normalized (:class:`~synthface.targets.ParameterNormalizer`)
  identity / expression / pose vector from the image, starting at zero (the training mean) and
  refining it ``coarse_iterations`` times with PNCC + normals of the current estimate rendered by
  one :class:`~synthface.render.FaceRenderer` (GL). The pose is regressed as the image-relative
  code of :func:`~synthface.targets.encode_pose` (``tx/tz, ty/tz, log(tz/fx)``; K comes with each
  sample). Every iteration is supervised: squared error in normalized parameter space (identity
  and expression columns weighted by ``shape_weight``) plus ``geometric_weight`` × the mean
  camera-space vertex distance (mm) after aligning the mean depth (:func:`~synthface.losses.vertex_distance`).
* **fine** — CoarseNet frozen; the final coarse estimate is rendered to a depth map, mask and an
  albedo image ρ (the sample's own albedo, or the mean one: ``sfs_appearance``); FineNet refines
  the depth under the unsupervised shape-from-shading loss (:func:`~synthface.nets.sfs_loss`)
  against the shard image, shaded with the sample's lighting or the least-squares one. The shard's
  depth is used only for a metric (mean absolute depth error in mm), never in the loss.

Determinism and resume: the global batch of stage step ``s`` is a slice of the permutation
``numpy.random.default_rng([seed, stage, epoch])`` of the training split (:mod:`synthface.batches`)
and rank ``r`` of ``W`` takes every ``W``-th sample of it, so the data order depends on nothing
else (not the worker count, not the number of processes). A resumed run restores weights,
optimizer and RNG state and skips exactly the batches already consumed: its weights equal an
uninterrupted run's (tested).

Multi-GPU / multi-node: under ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` set) the
nets are wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); rank 0 alone writes
checkpoints, TensorBoard scalars and progress. ``batch_size`` is the global batch.

Run directory (:mod:`synthface.rundir`): ``run.json`` (config, data, model), ``checkpoints/step-XXXXXXX.pt``
and ``checkpoints/latest.pt`` (written to a temporary name, fsynced and renamed), ``tb/`` (TensorBoard).
Processes: :mod:`synthface.distributed`; data order: :mod:`synthface.batches`; CoarseNet's losses:
:mod:`synthface.losses`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .augment import Degradations
from .batches import STAGE_SALT, loader
from .checkpoint import TrainingCheckpoint, build_net, read_checkpoint, save_checkpoint
from .data import ShardDataset
from .distributed import join, mean_metrics, set_threads, weights_digest, wrap
from .errors import ConfigError, SynthfaceError
from .feedback import FeedbackRenderer
from .framing import training_fraction
from .geometry import resolve_device
from .loaders import load_model
from .model import MorphableModel
from .nets import CoarseNet
from .photos import PhotoDataset
from .rundir import data_records, resume_point, write_run_file
from .shards import locked_run_dir
from .stages import CoarseStage, FineStage, ResumeState, Stage
from .targets import ParameterNormalizer
from .train_config import TrainConfig, learning_rate


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


# ---------------------------------------------------------------- checkpoints

def _coarse_args(config: TrainConfig, n_params: int) -> dict[str, Any]:
    return {"n_params": n_params, "widths": list(config.coarse_widths), "blocks": config.coarse_blocks,
            "norm": config.coarse_norm, "hidden": config.coarse_hidden}


def _fine_args(config: TrainConfig) -> dict[str, Any]:
    return {"in_channels": 4, "widths": list(config.fine_widths), "head": config.fine_head}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- the run

ProgressFn = Callable[[str, int, int, Mapping[str, float]], None]
"""``progress(stage, stage_step, stage_steps, metrics)`` after every step (rank 0 only)."""


class _Trainer:
    def __init__(self, data: Sequence[Path], out: Path, config: TrainConfig, model: MorphableModel,
                 progress: ProgressFn | None) -> None:
        self.data, self.out, self.config, self.model, self.progress = data, out, config, model, progress
        kind = resolve_device(config.device)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if config.batch_size % world:
            raise ConfigError(f"--batch-size {config.batch_size} is not divisible by the {world} processes; "
                              "choose a multiple")
        self.proc = join("cuda" if kind.startswith("cuda") else "cpu")
        if kind.startswith("cuda"):
            self.device = torch.device("cuda", self.proc.local_rank) if self.proc.world > 1 else torch.device(kind)
        else:
            self.device = torch.device("cpu")
        self.threads = set_threads(config.threads, self.proc)
        self.writer: Any = None
        self.renderer: FeedbackRenderer | None = None
        self.photos: PhotoDataset | None = None
        self.summary: dict[str, Any] = {"stages": {}}
        # Set by prepare(), once, before any stage runs:
        self.stages: tuple[str, ...] = ()
        self.records: list[dict[str, Any]] = []
        self.image_size = 0
        self.step = 0
        """Optimizer steps over all stages so far."""
        self.normalizer: ParameterNormalizer | None = None
        self.coarse_args: dict[str, Any] = {}
        self.coarse_iterations = config.coarse_iterations
        self.coarse_source = "the --set coarse_* settings"
        """Where CoarseNet's arguments and weights come from (a checkpoint's path once one is read)."""
        self.coarse_weights: dict[str, Any] | None = None
        """CoarseNet's weights once this process trained it (the fine stage then starts from them)."""

    # ---- helpers

    def _optimization(self, net: torch.nn.Module, state: ResumeState, *,
                      resuming: bool) -> tuple[torch.optim.Optimizer, torch.nn.Module]:
        """A stage's optimizer (with its state and the RNG states restored when resuming that stage)
        and the net as the step sees it (DDP-wrapped under torchrun) — the same for every stage."""
        c = self.config
        opt: torch.optim.Optimizer = torch.optim.SGD(net.parameters(), lr=c.lr, momentum=0.9) \
            if c.optimizer == "sgd" else torch.optim.Adam(net.parameters(), lr=c.lr)
        if resuming and state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
        if resuming and state.rng is not None:
            _set_rng_state(state.rng)
        return opt, wrap(net, self.proc, self.device)

    def _log(self, prefix: str, metrics: Mapping[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)

    def _checkpoint(self, stage: str, step: int, stage_step: int, n_train: int, coarse: dict[str, Any],
                    fine: dict[str, Any] | None, opt: torch.optim.Optimizer, metrics: dict[str, float]) -> None:
        """Write the run's state after ``step`` (rank 0)."""
        if not self.proc.main:
            return
        c = self.config
        ckpt = TrainingCheckpoint(
            stage=stage, step=step, stage_step=stage_step, coarse=coarse, coarse_args=self.coarse_args,
            coarse_iterations=self.coarse_iterations, fine=fine, fine_args=_fine_args(c), normalizer=self.normalizer,
            model_name=self.model.name, model_sha256=self.model.sha256, image_size=self.image_size,
            optimizer=opt.state_dict(), rng=_rng_state(), metrics=metrics, train_config=c.to_dict(),
            data=self.records, synthface_version=__version__,
            data_state={"order": "numpy.random.default_rng([seed, stage_salt, epoch]).permutation(n_train), "
                                 "batches of batch_size, rank r takes [r::world_size]",
                        "seed": c.seed, "stage_salt": STAGE_SALT[stage], "n_train": n_train,
                        "batch_size": c.batch_size, "world_size": self.proc.world,
                        "epoch": stage_step // max(1, n_train // c.batch_size), "batches_consumed": stage_step})
        self.summary["checkpoint"] = str(save_checkpoint(ckpt, self.out))

    def datasets(self, fields: Sequence[str], normalize: Any, *, degrade: bool = False,
                 ) -> tuple[ShardDataset, ShardDataset]:
        """The training and validation splits; ``degrade``: camera degradations on the training images."""
        c = self.config
        train = ShardDataset(self.data, "train", c.val_fraction, fields, normalize,
                             augment=Degradations() if degrade else None, augment_seed=c.seed)
        val = ShardDataset(self.data, "val", c.val_fraction, fields, train.normalizer if normalize else None)
        return train, val

    def val_batches(self, val: ShardDataset) -> Iterator[dict[str, Any]]:
        n = min(self.config.val_batches, len(val) // self.config.batch_size or (1 if len(val) else 0))
        b = min(self.config.batch_size, len(val))
        batches = [list(range(k * b, (k + 1) * b)) for k in range(n)]
        return loader(val, batches, 0, False)  # type: ignore[arg-type]

    def _end_step(self, stage: str, metrics: dict[str, float], step: int, stage_step: int,
                  opt: torch.optim.Optimizer, val_metrics: dict[str, float], n_train: int, *,
                  validate: Callable[[], dict[str, float]] | None,
                  weights: Callable[[], tuple[dict[str, Any], dict[str, Any] | None]],
                  ) -> tuple[dict[str, float], dict[str, float]]:
        """After an optimizer step: check the loss, log, validate, checkpoint, report progress.

        Returns the last logged training metrics and the latest validation metrics.
        """
        c = self.config
        if not np.isfinite(metrics["loss"]):
            raise SynthfaceError(f"{stage} loss is {metrics['loss']} at step {stage_step}; lower --lr")
        last = metrics
        if stage_step % c.log_every == 0 or stage_step == c.steps:
            last = mean_metrics(metrics, self.proc, self.device)
            self._log(f"train/{stage}", last, step)
            self._log("lr", {stage: opt.param_groups[0]["lr"]}, step)
        if validate is not None and self._due(stage_step, c.val_every) and self.proc.main:
            val_metrics = validate()
            self._log(f"val/{stage}", val_metrics, step)
        if self._due(stage_step, c.checkpoint_every):
            self._checkpoint(stage, step, stage_step, n_train, *weights(), opt, val_metrics)
        if self.progress is not None and self.proc.main:
            self.progress(stage, stage_step, c.steps, metrics)
        return last, val_metrics

    def _due(self, stage_step: int, every: int) -> bool:
        return stage_step == self.config.steps or (every > 0 and stage_step % every == 0)

    # ---- set-up

    def prepare(self, resume: bool, coarse_checkpoint: Path | None) -> ResumeState:
        c = self.config
        stages = ("coarse", "fine") if c.stage == "all" else (c.stage,)
        self.stages = stages
        # Every rank validates the same things before rank 0 writes anything, so errors agree.
        self.records, models = data_records(self.data)  # before the datasets: no warnings about data refused
        if len(models) > 1:
            raise ConfigError(f"the --data directories were generated with {len(models)} different morphable models "
                              f"(sha256 {', '.join(m[:12] + '…' for m in sorted(models))}); one run trains on "
                              "data of one model: pass only the directories made with the same --model")
        if models != {self.model.sha256}:
            raise ConfigError(f"the shards were generated with another morphable model (sha256 "
                              f"{', '.join(m[:12] + '…' for m in sorted(models))}) than {self.model.name!r} "
                              f"({self.model.sha256[:12]}…); pass the model they were made with as --model")
        probe = ShardDataset(self.data, "train", c.val_fraction, ("image",), None)
        if len(probe) < c.batch_size:
            raise ConfigError(f"the training split of {', '.join(map(str, self.data))} has {len(probe)} samples, "
                              f"fewer than --batch-size {c.batch_size}; add data or lower --batch-size")
        self.image_size = int(probe[0]["image"].shape[-1])
        probe.close()
        if c.real_images:
            if "fine" not in stages:
                raise ConfigError("--real-images feeds the fine stage; use --stage fine or all")
            self.photos = PhotoDataset(c.real_images, self.image_size, fraction=training_fraction(self.records))
            if len(self.photos) < c.real_batch:
                raise ConfigError(f"--real-images {c.real_images}: {len(self.photos)} photos with a face, fewer "
                                  f"than the {c.real_batch} per batch; add photos or lower --real-fraction")
            self.summary["real_images"] = {"photos": len(self.photos), "skipped": len(self.photos.skipped),
                                           "detector": self.photos.detector}

        resumed = resume_point(self.out, c, self.records, self.model, stages, resume=resume, tidy=self.proc.main)
        if resumed is not None:
            ckpt, path = resumed
            state = ResumeState(stage=ckpt.stage, step=ckpt.step, stage_step=ckpt.stage_step, coarse=ckpt.coarse,
                           fine=ckpt.fine, optimizer=ckpt.optimizer, rng=ckpt.rng)
            self._coarse_settings(ckpt, path)
        elif stages[0] == "fine":
            ckpt = self._coarse_checkpoint(coarse_checkpoint)
            state = ResumeState(stage="fine", coarse=ckpt.coarse)
            self._coarse_settings(ckpt, coarse_checkpoint)
        else:
            state = ResumeState(stage=stages[0])
            self._coarse_settings(None, None)
        self.step = state.step

        self.proc.barrier()  # every rank has checked --out before rank 0 writes into it
        if self.proc.main:
            write_run_file(self.out, c, self.records, self.model, self.image_size)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=state.step if state.step else None)
        self.renderer = FeedbackRenderer(self.model, self.normalizer, self.image_size,
                                      faces_per_draw=min(c.faces_per_draw, c.batch_size // self.proc.world),
                                      device=self.device,
                                      gl_device=self.proc.local_rank if self.device.type == "cuda" else 0)
        return state

    def _coarse_checkpoint(self, path: Path | None) -> TrainingCheckpoint:
        """The --coarse-checkpoint of a fine-only run, checked against this run's model and data."""
        if path is None:
            raise ConfigError("--stage fine needs a trained CoarseNet: pass --coarse-checkpoint "
                              "(a checkpoint of a coarse or all run)")
        ckpt = read_checkpoint(path)
        if ckpt.model_sha256 != self.model.sha256:
            raise ConfigError(f"{path} was trained with model {ckpt.model_name} ({ckpt.model_sha256[:12]}…), not "
                              f"{self.model.name!r}; pass the same --model")
        if ckpt.image_size != self.image_size:
            raise ConfigError(f"{path} was trained on {ckpt.image_size} px images but --data holds "
                              f"{self.image_size} px ones; train FineNet on data of the CoarseNet's size, or "
                              "train a CoarseNet on this data")
        return ckpt

    def _coarse_settings(self, ckpt: TrainingCheckpoint | None, source: Path | None) -> None:
        """The one place CoarseNet's normalizer, arguments and refinement count are decided: a
        checkpoint's (resume, --coarse-checkpoint), or new ones fitted to this run's data."""
        if ckpt is not None:
            self.normalizer, self.coarse_args = ckpt.normalizer, ckpt.coarse_args
            self.coarse_iterations, self.coarse_source = ckpt.coarse_iterations, str(source)
            return
        c = self.config  # fitted on the training split: the same on every rank (deterministic)
        self.normalizer = ShardDataset(self.data, "train", c.val_fraction, ("params",), "fit").normalizer
        self.coarse_args = _coarse_args(c, self.normalizer.dim)
        self.coarse_iterations = c.coarse_iterations

    # ---- stages

    def coarse_net(self, weights: dict[str, Any] | None) -> CoarseNet:
        """CoarseNet of ``coarse_args``: fresh (seeded) or with ``weights`` of :attr:`coarse_source`."""
        torch.manual_seed(self.config.seed)
        return build_net(CoarseNet, self.coarse_args, weights, self.coarse_source).to(self.device)

    def run_stage(self, stage: Stage, state: ResumeState) -> dict[str, Any]:
        """The one training loop: each step the stage's forward and backward (:meth:`Stage.step`), the
        learning rate of the schedule, the optimizer step, then logging, validation and checkpoints."""
        c = self.config
        opt, ddp = self._optimization(stage.net, state, resuming=stage.resuming)
        step, stage_step = stage.first_step, stage.start
        last: dict[str, float] = {}
        val_metrics: dict[str, float] = {}
        stage.net.train()
        for batch in stage.batches():
            metrics = stage.step(batch, ddp)
            _set_lr(opt, learning_rate(c, stage_step))
            opt.step()
            opt.zero_grad(set_to_none=True)
            step, stage_step = step + 1, stage_step + 1
            validate = stage.validate if len(stage.val_ds) else None
            last, val_metrics = self._end_step(stage.name, metrics, step, stage_step, opt, val_metrics,
                                               len(stage.train_ds), validate=validate, weights=stage.weights)
        self.step = step
        stage.finish()
        return {"steps": stage_step, "train": last, "val": val_metrics,
                "weights_sha256": weights_digest(stage.name, stage.net, self.proc)}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.renderer is not None:
            self.renderer.release()
        self.proc.leave()


def train(data: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
          config: TrainConfig | None = None, *, model: MorphableModel | None = None, resume: bool = False,
          coarse_checkpoint: str | os.PathLike | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Train the stages of ``config`` on the shards in ``data``, writing the run into ``out``.

    ``resume`` continues ``out/checkpoints/latest.pt`` exactly (same step counter, same data
    order); ``coarse_checkpoint`` supplies CoarseNet for ``stage="fine"``. Under torchrun every
    process calls this; rank 0 writes. Returns a summary: ``out``, ``step`` (global), per stage
    ``{steps, train, val}`` metrics, ``checkpoint`` (rank 0), ``seconds``, ``rank``, ``world_size``.
    """
    start = time.perf_counter()
    config = config or TrainConfig()
    paths = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(p) for p in data]
    if not paths:
        raise ConfigError("no --data given; pass at least one dataset directory")
    model = model or load_model()
    out = Path(out)
    # Rank 0 (the one that writes) holds the run lock on --out for the whole run: a second train or
    # generate there stops with one error line.
    lock = locked_run_dir(out, "train") if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory (new or empty)")
    # torch's global state is the caller's: the run's thread count, seeds and RNG states (set for the
    # weights' initialisation and restored on resume) stay inside this call.
    threads = torch.get_num_threads()
    try:
        with torch.random.fork_rng(devices=[]), lock:
            trainer = _Trainer(paths, out, config, model, progress)
            try:
                state = trainer.prepare(resume, Path(coarse_checkpoint) if coarse_checkpoint else None)
                resumed = state.step or None
                if "coarse" in trainer.stages and state.stage == "coarse":
                    trainer.summary["stages"]["coarse"] = trainer.run_stage(CoarseStage(trainer, state), state)
                if "fine" in trainer.stages:
                    trainer.summary["stages"]["fine"] = trainer.run_stage(FineStage(trainer, state), state)
            finally:
                trainer.close()
    finally:
        torch.set_num_threads(threads)
    return {**trainer.summary, "out": str(out), "step": trainer.step, "resumed_from": resumed,
            "seconds": time.perf_counter() - start, "rank": trainer.proc.rank, "world_size": trainer.proc.world,
            "threads": trainer.threads}

