"""Reshaping a source: a class subset (relabelled in the given order) and a test split carved from train."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.data import load_dataset, stratified_split
from robustft.errors import UserError

LABELS = np.arange(90) % 5 * (np.arange(90) % 7 > 0)  # 5 classes of unequal size, label 0 the largest


def _ids(ds) -> list[int]:
    """The sample ids that ``_write`` encoded in each image's pixels."""
    return (ds.x[:, 0, 0, 0].long() + 256 * ds.x[:, 1, 0, 0].long()).tolist()


def _write(path: Path, labels: np.ndarray) -> Path:
    """An npz whose image i carries id i in its pixels (so every split's members can be named)."""
    ids = np.arange(len(labels))
    x = np.zeros((len(labels), 3, 3, 3), np.uint8)
    x[..., 0], x[..., 1] = (ids % 256)[:, None, None], (ids // 256)[:, None, None]
    np.savez(path, x=x, y=labels)
    return path


@pytest.fixture
def one_file(tmp_path) -> Path:
    (tmp_path / "classes.txt").write_text("ant\nbee\ncat\ndog\neel\n")
    return _write(tmp_path / "all.npz", LABELS)


def test_classes_keep_those_samples_relabelled_in_the_given_order(one_file):
    ds = load_dataset(str(one_file), "train_full", classes=["dog", 1])  # a name and an index
    assert ds.classes == ["dog", "bee"]
    expected = [i for i, y in enumerate(LABELS) if y in (3, 1)]
    assert _ids(ds) == expected and ds.y.tolist() == [0 if LABELS[i] == 3 else 1 for i in expected]


@pytest.mark.parametrize("classes,match", [(["cow"], "no class 'cow' .*0=ant, 1=bee"), ([7], "no class index 7"),
                                           ([1, "bee"], "distinct"), ([], "distinct")])
def test_unknown_or_repeated_classes_are_one_error(one_file, classes, match):
    with pytest.raises(UserError, match=match):
        load_dataset(str(one_file), "train_full", classes=classes)


def test_test_fraction_carves_a_stratified_test_split_disjoint_from_train_and_val(one_file):
    kw = dict(test_fraction=0.2, split_seed=3, val_fraction=0.25)
    test, train, val, full = (load_dataset(str(one_file), s, **kw) for s in ("test", "train", "val", "train_full"))
    assert not set(_ids(test)) & set(_ids(full)), "the test split is never trained or selected on"
    assert sorted(_ids(test) + _ids(full)) == list(range(90)) and sorted(_ids(train) + _ids(val)) == _ids(full)
    counts = np.bincount(LABELS, minlength=5)
    assert np.bincount(test.y.numpy(), minlength=5).tolist() == np.maximum(np.round(0.2 * counts), 1).tolist()
    assert _ids(test) == stratified_split(torch.from_numpy(LABELS), 0.2, 3)[1].tolist()  # seeded by split_seed


def test_the_carved_test_split_depends_only_on_the_data_fraction_and_seed(one_file):
    def test_ids(**kw) -> list[int]:
        return _ids(load_dataset(str(one_file), "test", test_fraction=0.2, **kw))

    assert test_ids(split_seed=0) == test_ids(split_seed=0, val_fraction=0.5)
    assert test_ids(split_seed=0) != test_ids(split_seed=1)


def test_classes_are_chosen_before_the_test_split_is_carved(one_file):
    test = load_dataset(str(one_file), "test", classes=[4, 2], test_fraction=0.25)
    kept = np.flatnonzero(np.isin(LABELS, [4, 2]))
    relabelled = torch.from_numpy(np.where(LABELS[kept] == 4, 0, 1))
    assert _ids(test) == kept[stratified_split(relabelled, 0.25, 0)[1].numpy()].tolist()
    assert test.classes == ["eel", "cat"]


def test_test_fraction_is_refused_when_the_data_has_a_test_split(tmp_path):
    _write(tmp_path / "train.npz", LABELS)
    _write(tmp_path / "test.npz", LABELS[:10])
    with pytest.raises(UserError, match="has a test split of its own; remove data.test_fraction"):
        load_dataset(str(tmp_path), "train", test_fraction=0.2)
