"""Trainer checkpoints: one schema (:class:`TrainingCheckpoint`), written atomically by the trainer,
read safely by everyone.

On disk a checkpoint is a ``torch.save``d dict (``format="synthface-checkpoint"``, ``version``
:data:`CHECKPOINT_VERSION` — 2: the pose is regressed as :func:`~synthface.targets.encode_pose`'s
image-relative code) with the networks' weights and constructor arguments, the parameter
normalizer, the model's name and sha256, the image size, and the trainer's resume state (optimizer,
RNG, data position). :meth:`TrainingCheckpoint.to_dict` and :meth:`~TrainingCheckpoint.from_dict`
are the only code that knows that dict; every malformed file is one :class:`CheckpointError`
naming it. It is read with ``torch.load(weights_only=True)`` plus numpy's array reconstructors (for
RNG states): loading a checkpoint never runs code.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .nets import CoarseNet, FineNet
from .shards import atomic_write
from .targets import PARAM_VECTOR, ParameterNormalizer

CHECKPOINT_FORMAT = "synthface-checkpoint"
CHECKPOINT_VERSION = 2
REQUIRED_KEYS = ("stage", "step", "stage_step", "coarse", "coarse_args", "coarse_iterations", "fine", "fine_args",
                 "normalizer", "model", "image_size")
STAGES = ("coarse", "fine")
"""The training stage a checkpoint was written in."""


@dataclass(frozen=True, eq=False)
class TrainingCheckpoint:
    """Everything one checkpoint holds. Weights are state dicts (CPU tensors); :meth:`coarse_net` and
    :meth:`fine_net` build the networks."""

    stage: str
    """``coarse`` or ``fine``: the stage being trained when it was written."""
    step: int
    """Optimizer steps over all stages."""
    stage_step: int
    """Optimizer steps of ``stage``."""
    coarse: dict[str, torch.Tensor]
    """CoarseNet's weights."""
    coarse_args: dict[str, Any]
    """CoarseNet's constructor arguments (``n_params``, ``widths``, ``blocks``, ``norm``, ``hidden``)."""
    coarse_iterations: int
    """Refinements per image, as trained (≥ 1)."""
    fine: dict[str, torch.Tensor] | None
    """FineNet's weights; None before the fine stage."""
    fine_args: dict[str, Any] | None
    """FineNet's constructor arguments."""
    normalizer: ParameterNormalizer
    """How CoarseNet's outputs map to parameters (layout :data:`~synthface.targets.PARAM_VECTOR`)."""
    model_name: str
    model_sha256: str
    """The morphable model the parameters belong to."""
    image_size: int
    """Image size (pixels) of the training data."""
    optimizer: dict[str, Any] | None = None
    """The optimizer's state (resume)."""
    rng: dict[str, Any] | None = None
    """RNG states at the checkpoint (resume)."""
    data_state: dict[str, Any] = field(default_factory=dict)
    """Where the data order stood (documentation of the resume position)."""
    train_config: dict[str, Any] = field(default_factory=dict)
    """The run's :class:`~synthface.train_config.TrainConfig` as a dict."""
    data: list[Any] = field(default_factory=list)
    """The training data's records (manifest sha256 per dataset)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Validation metrics at the checkpoint."""
    synthface_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dict (what :func:`save_checkpoint` writes)."""
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "synthface_version": self.synthface_version,
                "stage": self.stage, "step": self.step, "stage_step": self.stage_step,
                "coarse": self.coarse, "coarse_args": self.coarse_args, "coarse_iterations": self.coarse_iterations,
                "fine": self.fine, "fine_args": self.fine_args, "normalizer": self.normalizer.state_dict(),
                "model": {"name": self.model_name, "sha256": self.model_sha256}, "image_size": self.image_size,
                "optimizer": self.optimizer, "rng": self.rng, "data_state": self.data_state,
                "train_config": self.train_config, "data": self.data, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, raw: Any, path: str | os.PathLike = "checkpoint") -> TrainingCheckpoint:
        """Check and convert an on-disk dict; anything malformed raises :class:`CheckpointError` naming ``path``."""
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointError(f"{path}: not a synthface checkpoint (format {got!r}, expected "
                                  f"{CHECKPOINT_FORMAT!r}); pass a file written by 'synthface train'")
        if raw.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{path}: checkpoint version {raw.get('version')!r} is not {CHECKPOINT_VERSION}; "
                                  "use the synthface version that wrote it")
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise CheckpointError(f"{path}: malformed checkpoint, missing {', '.join(missing)}; "
                                  "use another checkpoint of the run")
        if raw["coarse"] is None:
            raise CheckpointError(f"{path}: checkpoint holds no CoarseNet weights; use a checkpoint written after "
                                  "coarse training started")
        try:
            model = dict(raw["model"])
            ckpt = cls(stage=str(raw["stage"]), step=int(raw["step"]), stage_step=int(raw["stage_step"]),
                       coarse=dict(raw["coarse"]), coarse_args=dict(raw["coarse_args"]),
                       coarse_iterations=int(raw["coarse_iterations"]),
                       fine=None if raw["fine"] is None else dict(raw["fine"]),
                       fine_args=None if raw["fine_args"] is None else dict(raw["fine_args"]),
                       normalizer=ParameterNormalizer.from_state_dict(raw["normalizer"]),
                       model_name=str(model["name"]), model_sha256=str(model["sha256"]),
                       image_size=int(raw["image_size"]), optimizer=raw.get("optimizer"), rng=raw.get("rng"),
                       data_state=dict(raw.get("data_state") or {}), train_config=dict(raw.get("train_config") or {}),
                       data=list(raw.get("data") or []), metrics=dict(raw.get("metrics") or {}),
                       synthface_version=str(raw.get("synthface_version", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {first}); "
                                  "use another checkpoint of the run") from exc
        n_params = ckpt.coarse_args.get("n_params")
        if ckpt.normalizer.names != PARAM_VECTOR or ckpt.normalizer.dim != n_params:
            layout = dict(zip(ckpt.normalizer.names, ckpt.normalizer.sizes, strict=True))
            raise CheckpointError(f"{path}: normalizer layout {layout} does not match CoarseNet's {n_params} "
                                  "outputs; the checkpoint is inconsistent")
        if ckpt.stage not in STAGES or ckpt.coarse_iterations < 1 or min(ckpt.step, ckpt.stage_step) < 0 \
                or ckpt.image_size < 1:
            raise CheckpointError(f"{path}: malformed checkpoint (stage {ckpt.stage!r}, coarse_iterations "
                                  f"{ckpt.coarse_iterations}, step {ckpt.step}, image_size {ckpt.image_size}); "
                                  "use another checkpoint of the run")
        return ckpt

    def coarse_net(self, path: str | os.PathLike = "checkpoint") -> CoarseNet:
        """CoarseNet from ``coarse_args`` with these weights (CPU, train mode)."""
        return build_net(CoarseNet, self.coarse_args, self.coarse, path)

    def fine_net(self, path: str | os.PathLike = "checkpoint") -> FineNet | None:
        """FineNet from ``fine_args`` with these weights, or None before the fine stage."""
        return None if self.fine is None else build_net(FineNet, self.fine_args or {}, self.fine, path)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync and rename: ``path`` is absent, the old file, or the complete new one."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                              "check free space and permissions") from exc


def save_checkpoint(checkpoint: TrainingCheckpoint, out: str | os.PathLike) -> Path:
    """Write ``checkpoint`` as ``out/checkpoints/step-XXXXXXX.pt`` and ``latest.pt`` (both atomic);
    returns the former."""
    folder = Path(out) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(checkpoint.to_dict(), buffer)
    data = buffer.getvalue()
    path = folder / f"step-{checkpoint.step:07d}.pt"
    _atomic_write_bytes(path, data)
    _atomic_write_bytes(folder / "latest.pt", data)
    return path


def _load_globals() -> list[Any]:
    """numpy's array reconstructors: RNG states in a checkpoint are numpy arrays; these build data, never run code."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtypes = [type(np.dtype(t)) for t in ("u1", "u4", "u8", "i4", "i8", "f4", "f8", "bool")]
    return [np.ndarray, np.dtype, _reconstruct, *dtypes]


def _plain_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A state dict without the key prefixes DDP (``module.``) or ``torch.compile`` (``_orig_mod.``) add."""
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainingCheckpoint:
    """The checkpoint at ``path``; every problem raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found; pass the .pt file 'synthface train' wrote")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a file; pass the checkpoint file itself")
    try:
        with torch.serialization.safe_globals(_load_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on an unusual pickle protocol: the error says enough
            raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights-only refused something: what, if torch says
        found = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        raise CheckpointError(f"{path}: not a readable synthface checkpoint (it holds objects other than tensors "
                              f"and plain data{': ' + found[0] if found else ''}); synthface never loads code from "
                              "a checkpoint — pass a file written by 'synthface train'") from exc
    except Exception as exc:  # torch raises assorted errors (OSError, KeyError, RuntimeError, …) on bad files
        detail = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: not a readable synthface checkpoint ({type(exc).__name__}: "
                              f"{detail[0] if detail else ''}); the file is truncated, corrupt or not a "
                              "checkpoint — use another checkpoint of the run") from exc
    return TrainingCheckpoint.from_dict(raw, path)


def build_net(cls: type, args: Mapping[str, Any], state: Mapping[str, Any] | None,
              path: str | os.PathLike = "checkpoint") -> Any:
    """``cls(**args)`` with the weights ``state`` (None: freshly initialised); arguments or weights that do
    not fit raise :class:`CheckpointError` naming ``path`` (where they came from)."""
    try:
        net = cls(**dict(args))
        if state is not None:
            net.load_state_dict(_plain_state(state))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: {cls.__name__} weights do not fit the recorded architecture "
                              f"({type(exc).__name__}: {first}); use another checkpoint of the run") from exc
    return net
