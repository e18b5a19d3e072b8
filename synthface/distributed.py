"""The processes of a training run: torchrun's process group, per-process threads, DDP wrapping, and
what the ranks agree on (mean metrics, identical weights).

Under ``torchrun`` (``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` set) the nets are wrapped in
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); rank 0 alone writes. One process without
torchrun is ``Processes()``: every helper here is then a no-op.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import SynthfaceError


@dataclass(frozen=True)
class Processes:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    """Processes on this machine (they share its CPUs)."""
    owns_group: bool = False
    """Whether :func:`join` created the process group (and :meth:`leave` must destroy it)."""

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and progress."""
        return self.rank == 0

    def leave(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def join(device_kind: str) -> Processes:
    """Join the torchrun process group if ``WORLD_SIZE`` > 1 (gloo on CPU, NCCL on CUDA)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    import torch.distributed as dist

    owns = False
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
        owns = True
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, local_world, owns)


def set_threads(threads: int, proc: Processes) -> int:
    """Intra-op threads for this process (``threads``, or 0: its share of the CPUs), and llvmpipe's
    when several processes share the machine. Returns the count set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    threads = threads or max(1, cpus // proc.local_world)
    torch.set_num_threads(threads)
    if proc.local_world > 1:
        os.environ.setdefault("LP_NUM_THREADS", str(threads))  # Mesa's software rasteriser
    return threads


def wrap(net: torch.nn.Module, proc: Processes, device: torch.device) -> torch.nn.Module:
    """``net`` as a training step sees it: DDP-wrapped when there are several processes."""
    if proc.world == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def mean_metrics(metrics: dict[str, float], proc: Processes, device: torch.device) -> dict[str, float]:
    """Mean of each metric over the processes (every rank calls this at the same steps)."""
    if proc.world == 1 or not metrics:
        return metrics
    import torch.distributed as dist

    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / proc.world for k, v in zip(keys, t.tolist(), strict=True)}


def weights_digest(stage: str, net: torch.nn.Module, proc: Processes) -> str:
    """sha256 of ``net``'s weights at the end of ``stage``; under DDP every rank must hold the same
    (a rank that drifted would otherwise go unnoticed: only rank 0 writes checkpoints)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    if proc.world > 1:
        import torch.distributed as dist

        digests: list[Any] = [None] * proc.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) > 1:
            raise SynthfaceError(f"the {proc.world} processes ended the {stage} stage with different "
                                 f"weights ({len(set(digests))} versions); check that every node runs the "
                                 "same synthface, torch and data, then --resume")
    return digest
