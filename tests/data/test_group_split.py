"""Group-aware validation carve-out: a track (group) of one class is never in both train and val."""

import numpy as np
import pytest
import torch

from robustft.cli import main
from robustft.data import load_splits
from robustft.data.load import open_source
from robustft.data.splits import group_split, stratified_split
from robustft.errors import UserError
from support import finetune_args


def _tracks(classes: int = 4, tracks: int = 6, frames: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and per-class track ids (numbered from 0 in every class, as GTSRB's are)."""
    y = torch.arange(classes).repeat_interleave(tracks * frames)
    g = torch.arange(tracks).repeat_interleave(frames).repeat(classes)
    return y, g


def _units(y: torch.Tensor, g: torch.Tensor, idx: torch.Tensor) -> set[tuple[int, int]]:
    return set(zip(y[idx].tolist(), g[idx].tolist(), strict=True))


def test_no_group_is_in_both_splits_and_every_class_has_val():
    y, g = _tracks()
    train, val = group_split(y, g, 0.1, seed=0)
    assert not _units(y, g, train) & _units(y, g, val)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(y)))
    # 10% of 30 is 3 < one track of 5 frames: each class gives exactly one whole track
    assert torch.bincount(y[val]).tolist() == [5, 5, 5, 5]
    # a stratified split would cut tracks: the reason this exists
    s_train, s_val = stratified_split(y, 0.1, seed=0)
    assert _units(y, g, s_train) & _units(y, g, s_val)


def test_deterministic_and_seeded():
    y, g = _tracks()
    a, b = group_split(y, g, 0.3, seed=1), group_split(y, g, 0.3, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(group_split(y, g, 0.3, seed=2)[1], a[1])


def test_a_class_with_one_group_stays_in_train():
    y = torch.tensor([0] * 6 + [1] * 6)
    g = torch.tensor([0] * 6 + [0, 0, 0, 1, 1, 1])
    train, val = group_split(y, g, 0.4, seed=0)
    assert (y[val] == 0).sum() == 0 and (y[val] == 1).sum() == 3


def _npz(path, y: torch.Tensor, g: torch.Tensor, key: str = "track") -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (len(y), 8, 8, 3), dtype=np.uint8)
    np.savez(path, x=x, y=y.numpy(), **{key: g.numpy()})


def test_npz_group_array_is_found_and_used(tmp_path):
    y, g = _tracks()
    _npz(tmp_path / "train.npz", y, g)
    source = open_source(tmp_path / "train.npz")
    assert list(source.groups) == ["train"]
    val = load_splits(tmp_path / "train.npz", {"val": None}, val_fraction=0.1)["val"]
    assert torch.bincount(val.y).tolist() == [5, 5, 5, 5]  # whole tracks, not round(0.1 * 30) = 3 per class
    named = load_splits(tmp_path / "train.npz", {"val": None}, val_fraction=0.1, group_key="track")["val"]
    assert torch.equal(named.y, val.y)


def test_a_named_group_key_that_is_missing_is_one_user_error(tmp_path):
    y, g = _tracks()
    _npz(tmp_path / "train.npz", y, g)
    with pytest.raises(UserError, match="group_key='session'.*no such array"):
        open_source(tmp_path / "train.npz", group_key="session")


def test_classes_and_test_fraction_keep_groups_whole(tmp_path):
    y, g = _tracks(classes=4, tracks=10)
    _npz(tmp_path / "train.npz", y, g, key="groups")
    splits = load_splits(tmp_path / "train.npz", {"train": None, "val": None, "test": None}, val_fraction=0.1,
                         test_fraction=0.2, classes=[1, 3])
    assert sum(map(len, splits.values())) == 2 * 50
    assert torch.bincount(splits["test"].y).tolist() == [10, 10]  # two whole tracks per class
    assert torch.bincount(splits["val"].y).tolist() == [5, 5]


def test_finetune_cli_carves_validation_by_track(tiny_task, tmp_path, capsys):
    data, ckpt = tiny_task
    grouped = tmp_path / "grouped"
    grouped.mkdir()
    for split in ("train", "test"):
        with np.load(data / f"{split}.npz") as d:
            x, y = d["x"], d["y"]
        extra = {"track": np.arange(len(y)) // 16} if split == "train" else {}  # tracks of 4 frames per class
        np.savez(grouped / f"{split}.npz", x=x, y=y, **extra)
    args = finetune_args(grouped, ckpt, tmp_path, "r", "--epochs", "1", "--set", "data.val_fraction=0.03",
                         "--set", "data.train_n=64")
    assert main(args) == 0
    # 3% of 80 images per class is 2 (8 val when stratified); the group split takes one whole track of 4
    assert "data: 64 train / 16 val images" in capsys.readouterr().out
