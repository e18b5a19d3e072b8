"""Trainer checkpoints: one format, written atomically by the trainer, read safely by everyone.

A checkpoint is a ``torch.save``d dict (``format="synthface-checkpoint"``, ``version=2``: the pose is
regressed as :func:`~synthface.data.encode_pose`'s image-relative code) with the
networks' weights and constructor arguments, the parameter normalizer, the model's name and
sha256, the image size, and the trainer's resume state (optimizer, RNG, data position). It is read
with ``torch.load(weights_only=True)`` plus numpy's array reconstructors (for RNG states): loading
a checkpoint never runs code.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError
from .models import CoarseNet, FineNet
from .shards import atomic_write

CHECKPOINT_FORMAT = "synthface-checkpoint"
CHECKPOINT_VERSION = 2
REQUIRED_KEYS = ("stage", "step", "stage_step", "coarse", "coarse_args", "coarse_iterations", "fine", "fine_args",
                 "normalizer", "model", "image_size")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write, fsync and rename: ``path`` is absent, the old file, or the complete new one."""
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; "
                              "check free space and permissions") from exc


def save_checkpoint(state: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Write ``state`` as ``out/checkpoints/step-XXXXXXX.pt`` and ``latest.pt`` (both atomic); returns the former."""
    folder = Path(out) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    path = folder / f"step-{int(state['step']):07d}.pt"
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


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict, after checking format, version and keys; problems raise CheckpointError naming it."""
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
    return raw


def build_coarse(raw: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> CoarseNet:
    """CoarseNet from ``coarse_args`` with the checkpoint's weights (CPU, train mode)."""
    if raw.get("coarse") is None:
        raise CheckpointError(f"{path}: checkpoint holds no CoarseNet weights; use a checkpoint written after "
                              "coarse training started")
    return _build(CoarseNet, raw["coarse_args"], raw["coarse"], path)


def build_fine(raw: Mapping[str, Any], path: str | os.PathLike = "checkpoint") -> FineNet | None:
    """FineNet from ``fine_args`` with the checkpoint's weights, or None before the fine stage."""
    if raw.get("fine") is None:
        return None
    return _build(FineNet, raw["fine_args"] or {}, raw["fine"], path)


def _build(cls: type, args: Mapping[str, Any], state: Mapping[str, Any], path: str | os.PathLike) -> Any:
    try:
        net = cls(**dict(args))
        net.load_state_dict(_plain_state(state))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"{path}: {cls.__name__} weights do not fit the recorded architecture "
                              f"({type(exc).__name__}: {first}); use another checkpoint of the run") from exc
    return net
