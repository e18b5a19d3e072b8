"""What decides a training run: :class:`TrainConfig` and the choices its fields take.

Torch-free on purpose: the CLI builds its options from it, and ``synthface --help`` or the
generator's commands must not pay for importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ConfigError

STAGES = ("coarse", "fine", "all")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")
SFS_APPEARANCES = ("shard", "estimated")
SFS_MASKS = ("visible", "coarse")
SHAPE_WEIGHT = 0.2
"""Default weight of identity/expression columns in the coarse parameter loss. Why below 1: at low
resolution the many hardly visible shape columns drown the 6 pose columns, and pose is what most of
the depth error comes from. Measured at 64 px (bundled model, 1,350 steps of 32): at 1.0 the net
stayed at the data mean; at 0.2 the yaw error fell from 30° to 6°."""
DEFAULT_SFS_WEIGHTS: tuple[float, float, float] = (1.0, 1e-5, 1e-6)
"""(λ_sh, λ_f, λ_sm) for linear intensities in [0, 1] and depth in mm (Laplacian in mm/pixel²): a
squared shading residual of 1e-4 (1 % intensity) weighs like a 3 mm fidelity offset. The L1
Laplacian also penalises the face's own curvature (a sphere of 80 mm at 5 mm/pixel has |Δz| ≈ 0.6),
so λ_sm must stay small or it flattens the face; a starting point to tune, not the paper's values."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Units: steps are optimizer steps, sizes are samples."""

    stage: str = "all"
    """``coarse``, ``fine`` (needs a coarse checkpoint) or ``all`` (coarse, then fine)."""
    steps: int = 10_000
    """Optimizer steps per stage (may be raised when resuming, to train on)."""
    batch_size: int = 32
    """Global samples per step, split evenly across the DDP processes."""
    lr: float = 1e-4
    """Learning rate (the peak, with ``lr_schedule="cosine"``)."""
    lr_schedule: str = "constant"
    """``constant``, or ``cosine``: from ``lr`` down to ``lr / 100`` over each stage's ``steps``
    (a function of the stage step alone, so resume is exact)."""
    optimizer: str = "adam"
    """``adam`` or ``sgd`` (momentum 0.9)."""
    coarse_iterations: int = 3
    """T: CoarseNet refinements per image, each from a rendering of the previous estimate."""
    geometric_weight: float = 0.01
    """Coarse loss per mm of mean vertex distance (the parameter term is O(1) per column; at
    0.01 a 10 mm vertex error weighs like a normalized parameter MSE of 0.1)."""
    landmark_weight: float = 0.0
    """Weight of CoarseNet's landmark reprojection term (:func:`synthface.losses.landmark_error`: the
    estimate's 68 projected landmarks against the shard's visible ones, in image sides); 0: off."""
    shape_weight: float = SHAPE_WEIGHT
    """Weight of identity and expression columns in the parameter loss (pose columns: 1)."""
    sfs_weights: tuple[float, float, float] = DEFAULT_SFS_WEIGHTS
    """(λ_sh, λ_f, λ_sm) of FineNet's shape-from-shading loss (see ``sfs_loss``)."""
    sfs_appearance: str = "shard"
    """Albedo and lighting of the SfS loss on shard samples: ``shard`` — the sample's own albedo
    (drawn at the coarse estimate) and lighting, which the generator knows (scene parameters, not
    the depth; FineNet never sees them, it learns to refine without them); ``estimated`` — the
    model's mean albedo and lighting solved by least squares, as photos always get. Why ``shard``:
    with the lighting solved from the coarse normals the loss cannot tell a tilted or flattened
    face from a differently lit one (the bas-relief ambiguity), so it cannot correct the coarse shape."""
    sfs_mask: str = "visible"
    """Pixels the SfS shading term (and its lighting solve) uses on shard samples: ``visible`` — the
    coarse face mask where the shard shows the face (its ``mask``: not hair, an occluder or background);
    ``coarse`` — the whole coarse face mask, as photos always get. Fidelity and smoothness keep the
    whole coarse mask either way. Why ``visible``: shaded as skin, hair over the forehead teaches FineNet
    to bend the skin under it."""
    sfs_margin: int = 2
    """Pixels along the coarse silhouette left out of the SfS shading term (``sfs_loss``'s ``margin``)."""
    sfs_albedo_tolerance: float = 0.1
    """Pixels near an edge of the coarse albedo map (relative change above this within 2 pixels) are
    left out of the SfS shading term (``sfs_loss``'s ``albedo_tolerance``); 0: keep them."""
    coarse_widths: tuple[int, ...] = (32, 64, 128, 256)
    """CoarseNet residual-stage widths (channels)."""
    coarse_blocks: int = 2
    """Residual blocks per CoarseNet stage."""
    coarse_hidden: int = 512
    """Width of CoarseNet's hidden fully connected layer."""
    coarse_norm: str = "group"
    """``group`` (batch-independent; default) or ``batch`` (SyncBatchNorm under DDP on CUDA)."""
    degrade: bool = False
    """Camera degradations (:class:`synthface.augment.Degradations`' defaults: colour, blur, noise, JPEG,
    greyscale) on CoarseNet's training images, drawn from (seed, sample, epoch); the shards, the
    validation split and FineNet's images (whose SfS loss shades with the shard's own albedo and light)
    stay clean. Why: photos are blurred, noisy and compressed; clean renders are not."""
    real_images: str = ""
    """Folder of unlabelled face photos for the fine stage ('' = none): each fine batch then takes
    ``real_fraction`` of its samples from them (:class:`~synthface.photos.PhotoDataset`) and the
    rest from the shards; the SfS loss needs no labels. The shards still give the depth metric."""
    real_fraction: float = 0.5
    """Share of each fine batch drawn from ``real_images`` (1: photos only), when given."""
    fine_widths: tuple[int, ...] = (16, 32, 48, 64)
    """FineNet channels per scale (1, 1/2, 1/4, … resolution)."""
    fine_head: int = 64
    """Channels of FineNet's first 1×1 hypercolumn layer."""
    num_workers: int = 2
    """DataLoader worker processes per training process (0: read in the training process)."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda`` (under torchrun each process takes ``cuda:LOCAL_RANK``)."""
    threads: int = 0
    """torch intra-op threads per process; 0: usable CPUs / processes on this node (oversubscribed
    threads make small CPU convolutions many times slower)."""
    seed: int = 0
    """Seeds weight initialisation and the data order."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps of a stage (and always at a stage's end)."""
    log_every: int = 10
    """TensorBoard scalars every this many steps."""
    val_every: int = 1000
    """Validate every this many steps of a stage (and at its end); 0: only at the end."""
    val_batches: int = 8
    """Validation batches (of ``batch_size``, fixed order) per validation."""
    val_fraction: float = 0.05
    """Share of samples in the validation split (``ShardDataset``'s deterministic split)."""
    faces_per_draw: int = 64
    """Renderer tiles per GL draw (feedback / coarse depth)."""

    @property
    def sfs_options(self) -> dict[str, Any]:
        """Keyword arguments of ``sfs_loss`` besides the tensors: weights and which pixels shade."""
        return {"weights": self.sfs_weights, "margin": self.sfs_margin,
                "albedo_tolerance": self.sfs_albedo_tolerance or None}

    def __post_init__(self) -> None:
        object.__setattr__(self, "sfs_weights", tuple(float(w) for w in self.sfs_weights))
        object.__setattr__(self, "coarse_widths", tuple(int(w) for w in self.coarse_widths))
        object.__setattr__(self, "fine_widths", tuple(int(w) for w in self.fine_widths))
        checks = [
            (self.stage in STAGES, f"stage must be one of {', '.join(STAGES)}, got {self.stage!r}"),
            (self.steps >= 1, f"--steps must be at least 1, got {self.steps}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.lr_schedule in LR_SCHEDULES,
             f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.coarse_iterations >= 1, f"coarse_iterations must be at least 1, got {self.coarse_iterations}"),
            (self.geometric_weight >= 0, f"geometric_weight must be >= 0, got {self.geometric_weight}"),
            (self.shape_weight >= 0, f"shape_weight must be >= 0, got {self.shape_weight}"),
            (self.landmark_weight >= 0, f"landmark_weight must be >= 0, got {self.landmark_weight}"),
            (0.0 < self.real_fraction <= 1.0, f"--real-fraction must be in (0, 1], got {self.real_fraction}"),
            (not self.real_images or self.real_batch >= 1,
             f"--real-fraction {self.real_fraction} of --batch-size {self.batch_size} is no photo per batch; raise it"),
            (len(self.sfs_weights) == 3 and min(self.sfs_weights) >= 0,
             f"sfs_weights must be three weights >= 0, got {self.sfs_weights}"),
            (self.sfs_appearance in SFS_APPEARANCES,
             f"sfs_appearance must be one of {', '.join(SFS_APPEARANCES)}, got {self.sfs_appearance!r}"),
            (self.sfs_mask in SFS_MASKS, f"sfs_mask must be one of {', '.join(SFS_MASKS)}, got {self.sfs_mask!r}"),
            (self.sfs_margin >= 0 and self.sfs_albedo_tolerance >= 0,
             f"sfs_margin and sfs_albedo_tolerance must be >= 0, got {self.sfs_margin}, {self.sfs_albedo_tolerance}"),
            (bool(self.coarse_widths) and min(self.coarse_widths) >= 1, "coarse_widths must be positive"),
            (self.coarse_blocks >= 1 and self.coarse_hidden >= 1, "coarse_blocks and coarse_hidden must be >= 1"),
            (self.coarse_norm in ("group", "batch"), f"coarse_norm must be group or batch, got {self.coarse_norm!r}"),
            (bool(self.fine_widths) and min(self.fine_widths) >= 1 and self.fine_head >= 2,
             "fine_widths must be positive and fine_head at least 2"),
            (self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
            (self.checkpoint_every >= 1, f"--checkpoint-every must be at least 1, got {self.checkpoint_every}"),
            (self.log_every >= 1, f"log_every must be at least 1, got {self.log_every}"),
            (self.val_every >= 0 and self.val_batches >= 0, "val_every and val_batches must be >= 0"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.faces_per_draw >= 1, f"faces_per_draw must be at least 1, got {self.faces_per_draw}"),
            (0 <= self.seed < 2**63, f"seed must be in [0, 2^63), got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def real_batch(self) -> int:
        """Photos per global fine batch (0 without ``real_images``)."""
        return round(self.batch_size * self.real_fraction) if self.real_images else 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` (field → value, e.g. from ``--set key=value``); an unknown field or a
        value of the wrong type raises :class:`ConfigError` naming it."""
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in {f.name for f in fields(self)}:
                raise ConfigError(f"--set {key}: unknown training setting; choose from "
                                  f"{', '.join(f.name for f in fields(self))}")
            current = getattr(self, key)
            number = (int, float)
            if isinstance(current, tuple):
                ok = isinstance(value, (list, tuple)) and all(isinstance(v, number) and not isinstance(v, bool)
                                                              for v in value)
                value = tuple(value) if ok else value
            elif isinstance(current, bool):
                ok = isinstance(value, bool)
            elif isinstance(current, float):
                ok = isinstance(value, number) and not isinstance(value, bool)
                value = float(value) if ok else value
            elif isinstance(current, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, str)
            if not ok:
                raise ConfigError(f"--set {key}={value!r}: expected a {type(current).__name__} like {current!r}")
            changes[key] = value
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


RESUMABLE_CHANGES = frozenset({"steps", "num_workers", "device", "threads", "checkpoint_every", "log_every",
                               "val_every", "val_batches", "faces_per_draw"})
"""Config fields a resumed run may change; any other change would make it a different run."""


def learning_rate(config: TrainConfig, stage_step: int) -> float:
    """The learning rate of a stage's 0-based step ``stage_step`` under ``config.lr_schedule``."""
    if config.lr_schedule == "constant":
        return config.lr
    t = min(stage_step / config.steps, 1.0)
    return config.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t)))
