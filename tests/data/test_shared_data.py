"""Smoke checks on the real benchmark data in ../shared (skipped when it is absent)."""

import pytest
import torch

from robustft.data import load_dataset

pytestmark = pytest.mark.shared

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_cifar10_jpeg_zip_test_subset_is_class_balanced(shared_dir):
    ds = load_dataset(str(shared_dir / "data" / "cifar10-jpeg" / "cifar10-jpeg.zip"), "test", n=1000)
    assert ds.x.shape == (1000, 3, 32, 32) and ds.classes == CIFAR10_CLASSES
    assert torch.bincount(ds.y).tolist() == [100] * 10


def test_cifar100_npz_matches_its_readme(shared_dir):
    root = shared_dir / "data" / "cifar100"
    test = load_dataset(str(root), "test")
    assert test.x.shape == (10000, 3, 32, 32) and test.num_classes == 100 and test.classes[0] == "apple"
    assert torch.bincount(test.y).tolist() == [100] * 100
    val = load_dataset(str(root), "val")  # 10% of the 20k train subset, stratified
    assert torch.bincount(val.y).tolist() == [20] * 100
