"""Split arithmetic (stratified val carve-out, evenly spaced subset) and how load_dataset applies it."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.data import load_dataset, stratified_split, subset_indices
from robustft.errors import UserError

# Class sizes 10, 7, 1, 2, 25, interleaved in a fixed random order.
LABELS = torch.tensor([4] * 25 + [0] * 10 + [1] * 7 + [2] * 1 + [3] * 2)
LABELS = LABELS[torch.randperm(45, generator=torch.Generator().manual_seed(0))]


def test_stratified_split_counts_per_class():
    train, val = stratified_split(LABELS, 0.2, seed=0)
    # round(0.2 * count): 10 -> 2, 7 -> 1, a single image stays in train, 2 -> at least 1, 25 -> 5.
    assert torch.bincount(LABELS[val], minlength=5).tolist() == [2, 1, 0, 1, 5]
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(45))  # disjoint and covering
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)


def test_stratified_split_is_deterministic_in_the_seed():
    first, again = stratified_split(LABELS, 0.3, 7), stratified_split(LABELS, 0.3, 7)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(stratified_split(LABELS, 0.3, 7)[1], stratified_split(LABELS, 0.3, 8)[1])


def test_stratified_split_with_zero_fraction_keeps_everything_in_train():
    train, val = stratified_split(LABELS, 0.0, 0)
    assert torch.equal(train, torch.arange(45)) and len(val) == 0


def test_subset_indices_formula():
    for length, n in ((10, 3), (1000, 7), (5, 5), (101, 100)):
        assert subset_indices(length, n).tolist() == [round(i * length / n) for i in range(n)]
    with pytest.raises(UserError, match="n=6"):
        subset_indices(5, 6)


@pytest.fixture
def npz_train(tmp_path: Path) -> Path:
    """60 train images whose first pixel is their index; labels cycle through 3 classes."""
    x = np.zeros((60, 2, 2, 3), np.uint8)
    x[:, 0, 0, 0] = np.arange(60)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(60) % 3)
    np.savez(tmp_path / "test.npz", x=x[:9], y=np.arange(9) % 3)
    return tmp_path


def _ids(ds) -> list[int]:
    return ds.x[:, 0, 0, 0].tolist()


def test_train_and_val_partition_train_full(npz_train):
    full = _ids(load_dataset(str(npz_train), "train_full"))
    train = _ids(load_dataset(str(npz_train), "train", val_fraction=0.2, split_seed=3))
    val = load_dataset(str(npz_train), "val", val_fraction=0.2, split_seed=3)
    assert full == list(range(60))
    assert sorted(train + _ids(val)) == full and not set(train) & set(_ids(val))
    assert train == sorted(train) and torch.bincount(val.y).tolist() == [4, 4, 4]


def test_subset_is_taken_after_the_split(npz_train):
    val = _ids(load_dataset(str(npz_train), "val", val_fraction=0.5, split_seed=1))
    small = _ids(load_dataset(str(npz_train), "val", val_fraction=0.5, split_seed=1, n=4))
    assert small == [val[round(i * len(val) / 4)] for i in range(4)]


def test_split_errors(npz_train):
    with pytest.raises(UserError, match="train, val, test, train_full"):
        load_dataset(str(npz_train), "validation")
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset(str(npz_train), "val", val_fraction=0)
    with pytest.raises(UserError, match="val_fraction"):
        load_dataset(str(npz_train), "train", val_fraction=1.5)
