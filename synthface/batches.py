"""What each training step sees: the data order of a stage and the loader that reads it.

The global batch of stage step ``s`` is a slice of the permutation
``numpy.random.default_rng([seed, stage salt, epoch])`` of the training split (:func:`batch_positions`)
and rank ``r`` of ``W`` takes every ``W``-th sample of it, so the order depends on nothing else (not
the worker count, not the number of processes) and a resumed run skips exactly the batches consumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .data import ShardDataset
from .errors import ShardError, SynthfaceError

STAGE_SALT = {"coarse": 0, "fine": 1, "real": 2}
"""Data order of a stage: ``default_rng([seed, STAGE_SALT[stage], epoch])``."""


def batch_positions(n: int, batch_size: int, seed: int, stage: str, step: int) -> np.ndarray:
    """Positions (in the training split) of the global batch of ``stage`` step ``step`` (0-based).

    Epoch ``e`` visits ``default_rng([seed, salt(stage), e]).permutation(n)`` in batches of
    ``batch_size``, dropping the incomplete last one: the order depends only on these arguments.
    """
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, STAGE_SALT[stage], epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]


class StepBatches(Sampler[list[tuple[int, int]]]):
    """This rank's share (``[rank::world]``) of the global batches of steps ``start .. stop - 1``, as
    (position, epoch) pairs: the epoch draws a sample's degradations anew on each pass (``ShardDataset.set_epoch``)."""

    def __init__(self, n: int, batch_size: int, seed: int, stage: str, start: int, stop: int,
                 rank: int = 0, world: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.stage = n, batch_size, seed, stage
        self.start, self.stop, self.rank, self.world = start, stop, rank, world

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // self.batch_size
        for step in range(self.start, self.stop):
            positions = batch_positions(self.n, self.batch_size, self.seed, self.stage, step)[self.rank::self.world]
            yield [(p, step // per_epoch) for p in positions.tolist()]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


@dataclass(frozen=True)
class _Failure:
    message: str


class _Reader(Dataset):
    """A ShardDataset whose read errors travel back as values: an exception raised in a DataLoader
    worker is re-raised with the worker's traceback pasted into its message, not one clean line."""

    def __init__(self, dataset: ShardDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        try:
            if epoch is not None and hasattr(self.dataset, "set_epoch"):  # per item: workers read any epoch's
                self.dataset.set_epoch(epoch)
            return self.dataset[i]
        except SynthfaceError as exc:
            return _Failure(str(exc))


def _collate(items: list[Any]) -> Any:
    for item in items:
        if isinstance(item, _Failure):
            return item
    return default_collate(items)


def loader(dataset: ShardDataset, sampler: Sampler, num_workers: int, pin: bool) -> Iterator[dict[str, Any]]:
    loader = DataLoader(_Reader(dataset), batch_sampler=sampler, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=pin, prefetch_factor=2 if num_workers else None)
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except RuntimeError as exc:  # torch's words for a worker killed underneath it (OOM killer, kill -9)
            if "DataLoader worker" not in str(exc):
                raise
            raise SynthfaceError(f"a data-loading worker process died ({str(exc).strip().splitlines()[0]}); free "
                                 "memory or lower --num-workers, then run train --resume") from exc
        if isinstance(batch, _Failure):
            raise ShardError(batch.message)
        yield batch
