"""The train/val split: sample ``i`` of a dataset generated with seed ``s`` is in the validation split
iff ``split_unit(s, i) < val_fraction`` (a splitmix64 hash of ``(s, i)`` mapped to [0, 1)). It depends
only on the sample's identity, never on shard size, worker count or the order the paths are given;
raising ``val_fraction`` only moves samples from train to val.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def split_unit(seed: int, indices: Iterable[int] | np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per sample, fixed by ``(seed, index)``: the split key.

    ``splitmix64(splitmix64(seed) XOR index) >> 11``, scaled by 2**-53; reproducible in any language.
    """
    key = _splitmix64(np.array([seed], dtype=np.uint64))
    h = _splitmix64(np.asarray(indices, dtype=np.uint64) ^ key)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def in_val(seed: int, indices: Iterable[int] | np.ndarray, val_fraction: float) -> np.ndarray:
    """Boolean mask: which samples belong to the validation split."""
    return split_unit(seed, indices) < val_fraction
