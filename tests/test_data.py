"""ShardDataset over real generated shards: items, workers, several directories, split, normalizer, errors."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import time

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthface.data import FIELDS, ShardDataset
from synthface.errors import ConfigError, ShardError, SynthfaceError
from synthface.split import in_val
from synthface.targets import PARAM_VECTOR, ParameterNormalizer

from .helpers import make_dataset

SIZE = 32
ALL_FIELDS = (*FIELDS, "params")


def make(out, model, *, n: int, seed: int, shard_size: int, extras: tuple[str, ...] = ()):
    return make_dataset(out, model, n=n, seed=seed, shard_size=shard_size, size=SIZE, extras=extras, faces_per_draw=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory, sphere_model):
    """a: 24 samples in shards of 8, with normals and PNCC; a5: the same in shards of 5; b: another seed."""
    root = tmp_path_factory.mktemp("data")
    return {
        "a": make(root / "a", sphere_model, n=24, seed=1, shard_size=8, extras=("normals", "pncc")),
        "a5": make(root / "a5", sphere_model, n=24, seed=1, shard_size=5, extras=("normals", "pncc")),
        "b": make(root / "b", sphere_model, n=10, seed=2, shard_size=4),
    }


def direct(directory, index: int) -> dict[str, np.ndarray]:
    """Sample ``index`` read with plain h5py, as the README shows."""
    for path in sorted(directory.glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            row = index - int(f.attrs["first_index"])
            if 0 <= row < int(f.attrs["count"]):
                found: list[str] = []
                f.visititems(lambda name, obj, found=found: found.append(name) if isinstance(obj, h5py.Dataset)
                             else None)
                return {name: f[name][row] for name in found}
    raise KeyError(index)


def assert_items_equal(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> None:
    assert x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, msg=k)


def test_items_match_what_h5py_reads(data):
    ds = ShardDataset(data["a"], split="all", fields=ALL_FIELDS, normalize=None)
    assert len(ds) == 24 and list(ds.sample_indices) == list(range(24))
    for i in (0, 7, 8, 23, -1):
        item, want = ds[i], direct(data["a"], i % 24)
        assert item.keys() == set(ALL_FIELDS)
        np.testing.assert_array_equal(item["image"].numpy(), want["image"].transpose(2, 0, 1) / np.float32(255))
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, SIZE, SIZE)
        assert 0 <= item["image"].min() and item["image"].max() <= 1
        np.testing.assert_array_equal(item["depth"].numpy(), want["depth"][None])
        np.testing.assert_array_equal(item["mask"].numpy(), want["mask"][None].astype(np.float32))
        for name in ("normals", "pncc"):
            np.testing.assert_array_equal(item[name].numpy(), want[name].transpose(2, 0, 1))
        assert item["depth"].shape == item["mask"].shape == (1, SIZE, SIZE)
        for name in ("identity", "expression", "albedo", "pose", "light", "background", "intrinsics",
                     "landmarks", "landmarks_visible", "index"):
            np.testing.assert_array_equal(item[name].numpy(), want[FIELDS[name].dataset], err_msg=name)
        np.testing.assert_array_equal(item["params"].numpy(),
                                      np.concatenate([want[f"params/{n}"] for n in PARAM_VECTOR]))
        assert item["index"].item() == i % 24 and item["landmarks_visible"].dtype == torch.bool
    with pytest.raises(IndexError):
        ds[24]


def test_dataloader_workers_yield_the_same_samples(data):
    ds = ShardDataset(data["a"], val_fraction=0.25, fields=("image", "depth", "params", "landmarks"))
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=5, shuffle=False, num_workers=workers)
        batches[workers] = list(loader)
    assert len(batches[0]) == len(batches[2]) == -(-len(ds) // 5)
    for b0, b2 in zip(batches[0], batches[2], strict=True):
        assert_items_equal(b0, b2)
    np.testing.assert_array_equal(torch.cat([b["index"] for b in batches[2]]).numpy(), ds.sample_indices)
    # Shuffled, every sample still comes exactly once.
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    assert sorted(torch.cat([b["index"] for b in loader]).tolist()) == sorted(ds.sample_indices.tolist())


class PidDataset(ShardDataset):
    """Adds which process read the item and which process opened the handle it used."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        return {**item, "pid": torch.tensor(os.getpid()), "opener": torch.tensor(self._pid)}


def test_workers_never_use_a_handle_opened_in_the_parent(data):
    ds = PidDataset(data["a"], split="all", fields=("image",))
    first = ds[0]  # the parent opens shard 0 ...
    assert ds._pid == os.getpid() and ds._handles
    clone = pickle.loads(pickle.dumps(ds))  # ... but a pickled copy (spawn/forkserver) carries no handle
    assert clone._handles == {} and clone._pid is None
    assert_items_equal(clone[0], first)
    for context in ("fork", "spawn"):
        loader = DataLoader(ds, batch_size=6, num_workers=2 if context == "fork" else 1,
                            multiprocessing_context=context)
        batches = list(loader)
        pids = torch.cat([b["pid"] for b in batches])
        assert (pids != os.getpid()).all(), context
        assert torch.equal(torch.cat([b["opener"] for b in batches]), pids), context
        torch.testing.assert_close(batches[0]["image"][0], first["image"], rtol=0, atol=0)
    assert ds._pid == os.getpid()  # the parent's own handles are untouched
    ds.close()


def test_several_directories_and_shard_files(data):
    a = ShardDataset(data["a"], split="all", normalize=None)
    b = ShardDataset(data["b"], split="all", normalize=None)
    both = ShardDataset([data["a"], data["b"]], split="all", normalize=None)
    assert len(both) == 34
    assert list(both.source_ids) == [0] * 24 + [1] * 10
    for i in (0, 23):
        assert_items_equal(both[i], a[i])
    for j in (0, 5, 9):
        assert_items_equal(both[24 + j], b[j])
    # A shard file can be given directly, next to a directory.
    mixed = ShardDataset([data["b"], data["a"] / "shard-000001.h5"], split="all", normalize=None)
    assert len(mixed) == 18 and list(mixed.sample_indices[10:]) == list(range(8, 16))
    assert_items_equal(mixed[10], a[8])
    # Splits of several directories are the union of each directory's split.
    for split in ("train", "val"):
        multi = ShardDataset([data["a"], data["b"]], split=split, val_fraction=0.3, normalize=None)
        parts = [ShardDataset(data[k], split=split, val_fraction=0.3, normalize=None) for k in "ab"]
        np.testing.assert_array_equal(multi.sample_indices, np.concatenate([p.sample_indices for p in parts]))
    with pytest.raises(ShardError, match="given twice"):
        ShardDataset([data["a"], data["a"] / "shard-000000.h5"])
    with pytest.warns(UserWarning, match="share seed 1 and sample indices"):
        ShardDataset([data["a"], data["a5"]])  # the same samples twice


def test_split_is_the_same_whatever_the_shard_size(data):
    for frac in (0.05, 0.25, 0.5):
        for split in ("train", "val"):
            eight = ShardDataset(data["a"], split=split, val_fraction=frac, fields=("image", "params"))
            five = ShardDataset(data["a5"], split=split, val_fraction=frac, fields=("image", "params"))
            np.testing.assert_array_equal(eight.sample_indices, five.sample_indices)
    assert len(eight) > 0 and len(five._shards) == 5
    for i in range(len(eight)):
        assert_items_equal(eight[i], five[i])  # same samples, same normalizer


def ids(paths, split: str, frac: float) -> set[tuple[int, int]]:
    ds = ShardDataset(paths, split=split, val_fraction=frac, normalize=None)
    return set(zip(ds.source_ids.tolist(), ds.sample_indices.tolist(), strict=True))


def test_train_and_val_partition_all(data):
    paths = [data["a"], data["b"]]
    for frac in (0.0, 0.1, 0.3, 1.0):
        train, val, all_ = (ids(paths, s, frac) for s in ("train", "val", "all"))
        assert not train & val and train | val == all_ and len(all_) == 34, frac
    assert not ShardDataset(data["a"], split="val", val_fraction=0.0, normalize=None).sample_indices.size
    # The split key: a fixed fraction over many samples, nested as val_fraction grows, seed-dependent.
    idx = np.arange(200_000)
    assert abs(in_val(7, idx, 0.05).mean() - 0.05) < 0.003
    assert (in_val(7, idx, 0.1) >= in_val(7, idx, 0.05)).all()
    assert (in_val(7, idx, 0.1) != in_val(8, idx, 0.1)).any()


def test_parameter_normalizer(data, tmp_path):
    ds = ShardDataset(data["a"], split="train", val_fraction=0.25)
    norm = ds.normalizer
    assert norm is not None and norm.names == PARAM_VECTOR and norm.dim == ds[0]["params"].shape[0]
    assert norm.columns()[norm.slices["pose"]] == ["pose.yaw", "pose.pitch", "pose.roll", "pose.tx", "pose.ty",
                                                   "pose.tz"]
    # Fitted on exactly the training split's stored parameters (pose as its image-relative code):
    # normalized they are ~N(0, 1) per column.
    raw = ShardDataset(data["a"], split="train", val_fraction=0.25, normalize=None, fields=("params", "intrinsics"))
    physical = torch.stack([raw[i]["params"] for i in range(len(raw))]).double()
    k = torch.stack([raw[i]["intrinsics"] for i in range(len(raw))]).double()
    z = torch.stack([ds[i]["params"] for i in range(len(ds))])
    varying = physical.std(0) > 1e-6
    torch.testing.assert_close(z.mean(0), torch.zeros(norm.dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0)[varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0)
    # Round trips, numpy and torch: decode(encode(blocks)) = blocks; flatten/unflatten follow the named layout.
    blocks = dict(norm.unflatten(physical), intrinsics=k)
    torch.testing.assert_close(norm.encode(blocks).float(), z, atol=1e-4, rtol=1e-5)
    back_blocks = norm.decode(z.double(), k)
    torch.testing.assert_close(norm.flatten(back_blocks), physical, atol=1e-3, rtol=1e-5)
    np_blocks = {n: v.numpy() for n, v in blocks.items()}
    np.testing.assert_allclose(norm.flatten(norm.decode(norm.encode(np_blocks), k.numpy())), physical.numpy(),
                               rtol=1e-6, atol=1e-6)
    blocks = norm.unflatten(physical)
    assert {k: v.shape[1] for k, v in blocks.items()} == dict(zip(norm.names, norm.sizes, strict=True))
    torch.testing.assert_close(norm.flatten(blocks), physical)
    # A checkpoint stores it as plain tensors; weights_only loading reads it back.
    torch.save({"normalizer": norm.state_dict()}, tmp_path / "ckpt.pt")
    back = ParameterNormalizer.from_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["normalizer"])
    assert back.names == norm.names and back.sizes == norm.sizes
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    # The val split fits on the train split too, and a given normalizer is used as is.
    val = ShardDataset(data["a"], split="val", val_fraction=0.25)
    np.testing.assert_array_equal(val.normalizer.mean, norm.mean)
    assert ShardDataset(data["a"], split="val", val_fraction=0.25, normalize=back).normalizer is back
    other = ParameterNormalizer(PARAM_VECTOR, (1, 1, 6), np.zeros(8), np.ones(8))
    with pytest.raises(ConfigError, match="does not match these shards"):
        ShardDataset(data["a"], normalize=other)
    with pytest.raises(ConfigError, match="training split is empty"):
        ShardDataset(data["a"], split="val", val_fraction=1.0)


def copy_of(src, tmp_path):
    return shutil.copytree(src, tmp_path / "copy")


def test_missing_shard_is_named(data, tmp_path):
    d = copy_of(data["b"], tmp_path)
    (d / "shard-000001.h5").unlink()
    with pytest.raises(ShardError, match=r"shard-000001\.h5: shard missing"):
        ShardDataset(d)
    with pytest.raises(ShardError, match="no such dataset"):
        ShardDataset(tmp_path / "nowhere")
    with pytest.raises(ShardError, match="no manifest"):
        ShardDataset(tmp_path)


def test_truncated_and_garbage_shards_fail_at_construction(data, tmp_path):
    d = copy_of(data["b"], tmp_path)
    path = d / "shard-000002.h5"
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ShardError, match=r"shard-000002\.h5: not a readable HDF5 shard.*truncated"):
        ShardDataset(d)
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ShardError, match=r"shard-000002\.h5: not a readable HDF5 shard"):
        ShardDataset(d)


def loader_error(ds) -> str:
    """The ShardError a 2-worker DataLoader raises, as text."""
    try:
        list(DataLoader(ds, batch_size=4, num_workers=2))
    except ShardError as exc:
        # Drop the traceback: its frames hold the loader's iterator in a reference cycle, and an iterator
        # left to the garbage collector waits 5 s per worker to shut down.
        exc.__traceback__ = None
        return str(exc)
    raise AssertionError("the DataLoader raised no ShardError")


def test_corrupt_chunk_fails_at_read_time_naming_the_shard(data, tmp_path):
    d = copy_of(data["b"], tmp_path)
    path = d / "shard-000001.h5"
    with h5py.File(path, "r") as f:
        chunk = f["image"].id.get_chunk_info(2)  # sample 4 + 2 = 6
    with open(path, "r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write((bytes(range(7, 256)) * (chunk.size // 249 + 1))[:chunk.size])  # junk (all-0xff passes Fletcher-32)
    ds = ShardDataset(d, split="all", normalize=None)  # the header is fine: only reading finds it
    ds[5], ds[7]
    with pytest.raises(ShardError, match=r"shard-000001\.h5: cannot read 'image' of sample 6"):
        ds[6]
    # Raised inside a DataLoader worker, it reaches the training loop as the same ShardError.
    t0 = time.perf_counter()
    assert re.search(r"shard-000001\.h5: cannot read 'image' of sample 6", loader_error(ds))
    assert time.perf_counter() - t0 < 5


def test_other_format_version_or_mismatched_shard_is_refused(data, tmp_path):
    d = copy_of(data["b"], tmp_path)
    with h5py.File(d / "shard-000000.h5", "r+") as f:
        f.attrs["format_version"] = 5
    with pytest.raises(ShardError, match=r"shard-000000\.h5: shard format version 5 is not one of 1, 2, 3, 4") as err:
        ShardDataset(d)
    assert isinstance(err.value, SynthfaceError)
    with h5py.File(d / "shard-000000.h5", "r+") as f:
        f.attrs["format_version"] = 1
        f.attrs["first_index"] = 4
    with pytest.raises(ShardError, match=r"shard-000000\.h5: attributes .* do not match"):
        ShardDataset(d)
    with pytest.raises(ShardError, match=r"no dataset normals"):
        ShardDataset(data["b"], fields=("image", "normals"))
    with pytest.raises(ConfigError, match="unknown fields"):
        ShardDataset(data["b"], fields=("picture",))
    with pytest.raises(ConfigError, match="split must be"):
        ShardDataset(data["b"], split="test")  # type: ignore[arg-type]


def test_to_params_decodes_a_normalized_estimate_for_the_renderer():
    rng = np.random.default_rng(0)
    k = np.tile(np.array([[500.0, 0, 32], [0, 500, 32], [0, 0, 1]]), (20, 1, 1)) * rng.uniform(0.5, 2, (20, 1, 1))
    k[:, 2, 2] = 1
    blocks = {"identity": rng.normal(size=(20, 4)), "expression": rng.uniform(size=(20, 3)),
              "pose": rng.normal(size=(20, 6)) * [0.3, 0.2, 0.1, 10, 10, 100] + [0, 0, 0, 0, 0, 600]}
    with pytest.raises(ValueError, match="intrinsics"):
        ParameterNormalizer.fit(blocks)
    normalizer = ParameterNormalizer.fit({**blocks, "intrinsics": k})
    estimate = torch.as_tensor(normalizer.encode({**blocks, "intrinsics": k}), dtype=torch.float32,
                               device="cpu").requires_grad_()
    for given in (estimate, estimate.detach().numpy()):
        decoded = normalizer.to_params(given, k)
        assert list(decoded) == list(normalizer.names)
        for name, block in blocks.items():
            assert decoded[name].dtype == np.float32 and decoded[name].flags.c_contiguous
            np.testing.assert_allclose(decoded[name], block, rtol=1e-4, atol=1e-3)


def test_format_1_shards_read_with_their_implicit_material(data, tmp_path):
    """Format 1 had no params/material (its images had no highlight or occlusion): read as zeros."""
    d = copy_of(data["b"], tmp_path)
    for shard in d.glob("shard-*.h5"):
        with h5py.File(shard, "r+") as f:
            f.attrs["format_version"] = 1
            for name in ("params/material", "params/background_shapes", "params/background_sha256",
                         "params/occluders", "params/hair", "params/facial_hair", "segmentation"):
                del f[name]
    ds = ShardDataset(d, split="all", normalize=None, fields=("image", "material", "light"))
    item = ds[3]
    assert torch.equal(item["material"], torch.zeros(3)) and item["light"].shape == (9, 3)
    assert not torch.equal(ShardDataset(data["b"], split="all", normalize=None, fields=("material",))[3]["material"],
                           torch.zeros(3))  # format 2 stores it
