"""A training run's directory: ``run.json`` (what the run is), the checks that decide whether ``--out``
may be used or resumed, and which checkpoint a resume continues from.

Layout: ``run.json`` (config, data, model), ``checkpoints/step-XXXXXXX.pt`` and
``checkpoints/latest.pt`` (written by :func:`synthface.checkpoint.save_checkpoint`: temporary name,
fsync, rename), ``tb/`` (TensorBoard), and the run lock (:func:`synthface.shards.locked_run_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .checkpoint import TrainingCheckpoint, read_checkpoint
from .errors import CheckpointError, ConfigError, SynthfaceError
from .model import MorphableModel
from .resources import file_sha256
from .shards import LOCK, MANIFEST, atomic_write_text, open_source
from .train_config import RESUMABLE_CHANGES, TrainConfig

RUN_FILE = "run.json"
RUN_FORMAT = "synthface-run"


def data_records(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], set[str]]:
    """(record per data path: path + sha256 of its manifest, or of the shard file, and the data's
    ``face_fraction`` — the framing a photo crop reproduces, :func:`synthface.framing.training_fraction`),
    model sha256s."""
    records, models = [], set()
    for p in paths:
        source = open_source(p)
        models.add(source.model_sha256)
        digest = {"manifest_sha256": file_sha256(p / MANIFEST)} if p.is_dir() else {"sha256": file_sha256(p)}
        fraction = source.config().get("camera", {}).get("face_fraction")
        records.append({"path": str(p.resolve()), **digest, "face_fraction": fraction})
    return records, models


def _digest(record: Mapping[str, Any]) -> str:
    return str(record.get("manifest_sha256") or record.get("sha256"))


def holds_files(out: Path) -> bool:
    """Whether ``out`` holds anything but the run lock."""
    return any(p.name != LOCK for p in out.iterdir())


def write_run_file(out: Path, config: TrainConfig, records: list[dict[str, Any]], model: MorphableModel,
                   image_size: int) -> None:
    """``out/run.json``: the config, data and model a resume must match (atomic)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": RUN_FORMAT, "version": 1, "synthface_version": __version__,
              "train_config": config.to_dict(), "data": records,
              "model": {"name": model.name, "sha256": model.sha256}, "image_size": image_size}
    atomic_write_text(out / RUN_FILE, json.dumps(record, indent=1))


def resume_point(out: Path, config: TrainConfig, records: list[dict[str, Any]], model: MorphableModel,
                 stages: Sequence[str], *, resume: bool, tidy: bool) -> tuple[TrainingCheckpoint, Path] | None:
    """Refuse a non-empty ``out`` that is not this run; with ``resume``, the checkpoint to continue from
    (None: start from scratch). ``tidy`` (the writing process) removes a checkpoint's temporary file
    left by a killed run; nothing else is written."""
    run_file = out / RUN_FILE
    if not resume:
        if out.exists() and holds_files(out):
            hint = "pass --resume to continue that run" if run_file.is_file() else "choose a new or empty directory"
            raise ConfigError(f"--out {out} is not empty; {hint}")
        return None
    if not out.exists() or not holds_files(out):
        return None  # --resume on a fresh directory starts the run (handy for requeued jobs)
    if not run_file.is_file():
        raise ConfigError(f"--resume: {out} holds no synthface training run ({RUN_FILE} missing); "
                          "choose the run's directory, or a new one without --resume")
    try:
        stored = json.loads(run_file.read_text())
        old = TrainConfig.from_dict(stored["train_config"]).to_dict()
        old_data = [_digest(r) for r in stored["data"]]
        old_model = stored["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError, SynthfaceError) as exc:
        raise ConfigError(f"{run_file}: unreadable run file ({exc}); start a new run in an empty directory") \
            from exc
    new = config.to_dict()
    differ = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if differ:
        raise ConfigError(f"--resume: {out} was started with other settings "
                          f"({', '.join(f'{k}={old.get(k)!r}' for k in differ)}); pass the same ones")
    if old_data != [_digest(r) for r in records]:
        raise ConfigError(f"--resume: {out} was trained on other data (the --data manifests differ); pass the "
                          "same --data directories in the same order")
    if old_model != model.sha256:
        raise ConfigError(f"--resume: {out} was trained with model {stored['model'].get('name')!r}; "
                          "pass the same --model")
    latest = out / "checkpoints" / "latest.pt"
    if tidy:  # a checkpoint being written when the run was killed
        for tmp in (out / "checkpoints").glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    if not latest.exists():  # killed between the step file and latest.pt: the newest step file is as good
        steps = sorted((out / "checkpoints").glob("step-*.pt"))
        if not steps:
            return None  # stopped before its first checkpoint: start again
        latest = steps[-1]
    ckpt = read_checkpoint(latest)
    if ckpt.stage not in stages:
        raise CheckpointError(f"{latest}: stage {ckpt.stage!r} is not part of --stage {config.stage}")
    return ckpt, latest
