"""Spec resolution (names, paths, kind prefixes), data roots, and ArrayDataset basics."""

import numpy as np
import pytest
import torch

from robustft.data import ArrayDataset, default_cache_dir, default_data_root, load_dataset
from robustft.errors import UserError


def test_missing_path_is_one_sentence_naming_it(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        load_dataset(str(tmp_path / "missing.zip"))
    assert str(tmp_path / "missing.zip") in str(err.value)


def test_unknown_file_kind_asks_for_a_prefix(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"")
    with pytest.raises(UserError, match="imagefolder:"):
        load_dataset(str(tmp_path / "data.bin"))


def test_kind_prefix_overrides_detection(tmp_path, make_tree):
    make_tree(tmp_path, {"test": {"a": 2}})
    np.savez(tmp_path / "test.npz", x=np.zeros((1, 2, 2, 3), np.uint8), y=np.array([0]))
    assert len(load_dataset(str(tmp_path))) == 1  # a directory with .npz files is an npz dataset...
    assert len(load_dataset(f"imagefolder:{tmp_path}")) == 2  # ...unless told otherwise


def test_data_roots_follow_the_environment(tmp_path, monkeypatch, isolated_cache):
    assert default_cache_dir() == isolated_cache and default_data_root() == isolated_cache / "data"
    monkeypatch.setenv("ROBUSTFT_DATA", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"


def test_array_dataset_subset_to_and_validation():
    ds = ArrayDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), ["a", "b", "c", "d"], "t")
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.y.tolist() == [3, 1] and sub.num_classes == 4 and sub.name == "t"
    assert ds.to("cpu").x.device.type == "cpu"
    with pytest.raises(ValueError):
        ArrayDataset(torch.zeros(4, 1, 2, 2), torch.arange(4), ["a"], "t")
