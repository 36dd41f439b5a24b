"""Packed images on disk: the same batches as in memory, sharded by rank, written atomically and once."""

import numpy as np
import pytest
import torch
from PIL import Image

from robustft.data import PackedDataset, PackedImages, View, iterate_batches, load_splits
from robustft.data.store import DiskImages, open_store, write_store

SHAPES = [(40, 52), (44, 40), (40, 40), (60, 40)]


@pytest.fixture
def folder(tmp_path):
    """24 train and 8 test PNGs of 3 classes in four aspect ratios."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            (tmp_path / "d" / split / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (*SHAPES[i % 4], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "d" / split / f"c{i % 3}" / f"{i:02d}.png")
    return tmp_path / "d"


def _epoch(data, shard=(0, 1)):
    view = View("random_resized_crop", 32, hflip=True)
    return list(iterate_batches(data, 8, shuffle=True, generator=torch.Generator().manual_seed(0), augment=view,
                                drop_last=True, shard=shard))


def test_disk_store_gives_the_memory_batches_and_is_written_once(folder, isolated_cache, monkeypatch):
    options = dict(image_size=32, storage_size=36, val_fraction=0.25)
    memory = load_splits(folder, {"train": None, "val": None, "test": None}, **options)
    disk = load_splits(folder, {"train": None, "val": None, "test": None}, storage="disk", **options)
    assert isinstance(disk["train"].images, DiskImages) and isinstance(memory["train"].images, PackedImages)
    for split in memory:
        assert torch.equal(memory[split].y, disk[split].y)
        assert torch.equal(memory[split].render().x, disk[split].render().x)
    for (xm, ym), (xd, yd) in zip(_epoch(memory["train"]), _epoch(disk["train"]), strict=True):
        assert torch.equal(xm, xd) and torch.equal(ym, yd)
    stores = sorted((isolated_cache / "stores").iterdir())
    assert len(stores) == 2 and not [p for p in stores if p.name.startswith(".")]  # train and test; no leftovers
    pixels = np.load(stores[0] / "pixels.npy", mmap_mode="r")  # a standard NumPy file
    assert pixels.dtype == np.uint8 and pixels.ndim == 1
    from robustft.data import imagefolder
    monkeypatch.setattr(imagefolder, "_decoded", lambda *a: pytest.fail("decoded again"))
    again = load_splits(folder, {"train": None}, storage="disk", **options)["train"]
    assert torch.equal(again.render().x, disk["train"].render().x)


def test_auto_holds_a_split_in_memory_only_when_it_fits_the_budget(folder):
    options = dict(image_size=32, storage_size=36, storage="auto")
    small = load_splits(folder, {"train_full": None}, memory_budget_mb=0.01, **options)["train_full"]
    large = load_splits(folder, {"train_full": None}, memory_budget_mb=100, **options)["train_full"]
    assert isinstance(small.images, DiskImages) and isinstance(large.images, PackedImages)
    assert small.images.nbytes == large.images.nbytes > 0.01 * 2**20
    assert torch.equal(small.render().x, large.render().x)


def test_a_damaged_store_is_rebuilt(folder, isolated_cache):
    options = dict(image_size=32, storage_size=36, storage="disk")
    first = load_splits(folder, {"test": None}, **options)["test"].render().x
    (store,) = (isolated_cache / "stores").iterdir()
    (store / "index.npz").write_bytes(b"garbage")
    assert open_store(store) is None
    assert torch.equal(load_splits(folder, {"test": None}, **options)["test"].render().x, first)


def test_shards_of_a_batch_interleave_back_into_the_whole_batch(folder):
    data = load_splits(folder, {"train_full": None}, image_size=32, storage_size=36, storage="disk")["train_full"]
    whole = _epoch(data)
    ranks = [_epoch(data, shard=(rank, 2)) for rank in range(2)]
    for k, (x, y) in enumerate(whole):
        assert torch.equal(x[0::2], ranks[0][k][0]) and torch.equal(x[1::2], ranks[1][k][0])
        assert torch.equal(y[1::2], ranks[1][k][1])


def test_write_store_round_trips_and_leaves_nothing_behind_when_interrupted(tmp_path):
    images = [np.full((3, 5, 3), i, np.uint8) for i in range(4)]

    def failing():
        yield images[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_store(tmp_path / "s", failing(), torch.arange(4))
    assert list(tmp_path.iterdir()) == []
    write_store(tmp_path / "s", iter(images), torch.arange(4))
    stored, labels = open_store(tmp_path / "s")
    packed = stored.read(torch.tensor([3, 1]))
    assert torch.equal(packed.image(0), torch.from_numpy(images[3])) and labels.tolist() == [0, 1, 2, 3]
    data = PackedDataset(stored, labels, ["a"], "s", size=3)
    assert torch.equal(data.render().x[2], torch.full((3, 3, 3), 2, dtype=torch.uint8))
