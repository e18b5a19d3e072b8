"""Training-time camera degradations: deterministic per (seed, sample, epoch), pixels only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthface.augment import Degradations, degrade
from synthface.data import ShardDataset
from synthface.errors import ConfigError

from .conftest import make_model
from .helpers import make_dataset

NONE = Degradations(colour_prob=0, blur_prob=0, motion_prob=0, noise_prob=0, grey_prob=0, jpeg_prob=0)


def only(**kw) -> Degradations:
    from dataclasses import replace

    return replace(NONE, **kw)


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    """A 64 px image with edges and flat areas (sRGB in [0, 1])."""
    y, x = np.mgrid[0:64, 0:64] / 63.0
    img = np.stack([0.2 + 0.6 * (x > 0.5), 0.3 + 0.4 * y, 0.5 + 0.3 * ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1)])
    return torch.from_numpy(img.astype(np.float32))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def high_frequency(x: torch.Tensor) -> float:
    return float(((x[:, :, 1:] - x[:, :, :-1]) ** 2).mean())  # energy: blur spreads an edge, lowering it


def test_each_degradation_does_what_it_says(picture):
    assert torch.equal(degrade(picture, rng(), NONE), picture)
    blurred = degrade(picture, rng(), only(blur_prob=1.0, blur_sigma=(1.5, 1.5)))
    assert high_frequency(blurred) < 0.8 * high_frequency(picture)
    moved = degrade(picture, rng(), only(motion_prob=1.0, motion_length=(9, 9)))
    assert not torch.allclose(moved, picture, atol=1e-3)
    noisy = degrade(picture, rng(), only(noise_prob=1.0, noise_std=(0.03, 0.03)))
    assert abs(float((noisy - picture)[:, 10:20, 5:25].std()) - 0.03) < 0.006  # in a flat area
    grey = degrade(picture, rng(), only(grey_prob=1.0))
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])
    jpeg = degrade(picture, rng(), only(jpeg_prob=1.0, jpeg_quality=(10, 10)))
    assert 0.005 < float((jpeg - picture).abs().mean()) < 0.1
    brighter = degrade(picture, rng(), only(colour_prob=1.0, brightness=(0.05, 0.05), contrast=(1, 1),
                                            saturation=(1, 1), gamma=(1, 1)))
    assert abs(float((brighter - picture).mean()) - 0.05) < 0.01
    for out in (blurred, moved, noisy, grey, jpeg, brighter):
        assert out.shape == picture.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1


def test_same_generator_same_result_and_no_global_rng(picture):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = degrade(picture, rng(7))
    assert torch.equal(torch.get_rng_state(), before)  # torch's global generator untouched
    assert torch.equal(a, degrade(picture, rng(7)))
    assert not torch.equal(a, degrade(picture, rng(8)))


@pytest.mark.parametrize("bad", [{"blur_prob": 1.5}, {"noise_std": (0.1, 0.0)}, {"jpeg_quality": (50, 120)}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        Degradations(**bad)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("aug") / "d"
    return make_dataset(out, make_model("pca"), n=8, seed=3, shard_size=4, size=32, faces_per_draw=4)


def test_dataset_degrades_images_only_reproducibly_per_epoch(shards):
    clean = ShardDataset(shards, split="all", normalize=None, fields=("image", "landmarks", "depth"))
    aug = ShardDataset(shards, split="all", normalize=None, fields=("image", "landmarks", "depth"),
                       augment=Degradations(jpeg_prob=1.0))
    for i in range(len(clean)):
        a, c = aug[i], clean[i]
        assert not torch.equal(a["image"], c["image"])
        assert torch.equal(a["landmarks"], c["landmarks"]) and torch.equal(a["depth"], c["depth"])
        assert torch.equal(a["image"], aug[i]["image"])  # reading twice: the same degradation
    first = aug[0]["image"]
    aug.set_epoch(1)
    assert not torch.equal(first, aug[0]["image"])
    aug.set_epoch(0)
    # Worker processes draw exactly what the main process draws.
    loaded = next(iter(DataLoader(aug, batch_size=8, num_workers=2)))["image"]
    assert torch.equal(loaded, torch.stack([aug[i]["image"] for i in range(8)]))
    with pytest.raises(ConfigError, match="augment must be"):
        ShardDataset(shards, augment=True)


def test_the_trainers_batches_degrade_a_sample_anew_each_epoch(shards):
    """train --set degrade=true: the loader passes each item's epoch (StepBatches), so a sample seen on
    two passes is degraded two ways, each as the dataset draws it for that epoch, in worker processes too."""
    from synthface.batches import StepBatches, loader

    aug = ShardDataset(shards, split="all", normalize=None, fields=("image", "index"),
                       augment=Degradations(jpeg_prob=1.0), augment_seed=5)
    n, b = len(aug), 4
    per_epoch = n // b
    seen: dict[tuple[int, int], torch.Tensor] = {}
    batches = loader(aug, StepBatches(n, b, 0, "coarse", 0, 2 * per_epoch), num_workers=2, pin=False)
    for step, batch in enumerate(batches):
        for index, image in zip(batch["index"].tolist(), batch["image"], strict=True):
            seen[(index, step // per_epoch)] = image
    index = next(i for i, e in seen if (i, 1) in seen and e == 0)
    assert not torch.equal(seen[(index, 0)], seen[(index, 1)])
    position = [int(aug[p]["index"]) for p in range(n)].index(index)
    for epoch in (0, 1):
        aug.set_epoch(epoch)
        assert torch.equal(seen[(index, epoch)], aug[position]["image"])
