"""npz datasets: split from file names, concatenation order, class names, layout and errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.data import load_dataset
from robustft.errors import UserError


def _images(n: int, start: int = 0, channels: int = 3) -> np.ndarray:
    """N×4×5×C uint8 whose pixel (i, h, w, c) encodes (start + i, h, w, c), so layout bugs are visible."""
    i, h, w, c = np.meshgrid(np.arange(start, start + n), np.arange(4), np.arange(5), np.arange(channels),
                             indexing="ij")
    return ((i * 64 + h * 13 + w * 3 + c) % 256).astype(np.uint8)


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    root = tmp_path / "arrays"
    root.mkdir()
    np.savez(root / "train_b.npz", x=_images(2, start=3), y=np.array([1, 0]))
    np.savez(root / "train_a.npz", x=_images(3), y=np.array([0, 1, 1]))
    np.savez(root / "test.npz", x=_images(2, start=10), y=np.array([2, 0]))
    np.savez(root / "notes.npz", x=_images(1), y=np.array([7]))  # no split prefix: ignored
    return root


def test_splits_come_from_file_names_and_concatenate_in_sorted_order(npz_dir):
    train = load_dataset(str(npz_dir), "train_full")
    assert torch.equal(train.x, torch.from_numpy(_images(5)).permute(0, 3, 1, 2))  # train_a then train_b
    assert train.y.tolist() == [0, 1, 1, 1, 0]
    assert train.x[4, 2, 1, 3].item() == (4 * 64 + 1 * 13 + 3 * 3 + 2) % 256  # x[n, c, h, w] == npz x[n, h, w, c]
    test = load_dataset(str(npz_dir), "test")
    assert test.y.tolist() == [2, 0] and test.name == "arrays"
    assert train.classes == test.classes == ["0", "1", "2"]  # max label over all splits, not just train


def test_classes_txt_names_the_labels(npz_dir):
    (npz_dir / "classes.txt").write_text("apple\nbanana\ncherry\n")
    assert load_dataset(str(npz_dir / "test.npz"), "test").classes == ["apple", "banana", "cherry"]


def test_classes_txt_with_too_few_names_is_refused(npz_dir):
    (npz_dir / "classes.txt").write_text("apple\nbanana\n")
    with pytest.raises(UserError, match="classes.txt"):
        load_dataset(str(npz_dir), "test")


def test_single_file_has_only_its_own_split(npz_dir):
    with pytest.raises(UserError, match="no 'train' split"):
        load_dataset(f"npz:{npz_dir / 'test.npz'}", "train")


def test_grayscale_and_explicit_val(tmp_path):
    np.savez(tmp_path / "train.npz", x=_images(4, channels=1)[..., 0], y=np.arange(4))
    np.savez(tmp_path / "val.npz", x=_images(2, channels=1)[..., 0], y=np.array([3, 2]))
    val = load_dataset(str(tmp_path), "val")
    assert val.x.shape == (2, 1, 4, 5) and val.y.tolist() == [3, 2]
    assert len(load_dataset(str(tmp_path), "train")) == 4  # an explicit val leaves train whole


@pytest.mark.parametrize("arrays, message", [
    ({"x": _images(2)}, "no array 'y'"),
    ({"x": _images(2).astype(np.float32), "y": np.array([0, 1])}, "must be uint8"),
    ({"x": _images(3), "y": np.array([0, 1])}, "3 images but 2 labels"),
    ({"x": _images(2), "y": np.array([0.5, 1.0])}, "integer labels"),
])
def test_malformed_npz_is_a_user_error(tmp_path, arrays, message):
    np.savez(tmp_path / "test.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_dataset(str(tmp_path / "test.npz"), "test")


def test_corrupt_npz_is_a_user_error(tmp_path):
    (tmp_path / "test.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="test.npz"):
        load_dataset(str(tmp_path), "test")


# ---------------------------------------------------------------------------------------------------------------
# key names: data.x_key / data.y_key, else x/y, else the one array of each kind
# ---------------------------------------------------------------------------------------------------------------
def test_other_key_names_are_read_with_x_key_and_y_key(tmp_path):
    np.savez(tmp_path / "test.npz", imgs=_images(3), lbl=np.array([2, 0, 1]), also_images=_images(3, start=9))
    ds = load_dataset(str(tmp_path), "test", x_key="imgs", y_key="lbl")
    assert torch.equal(ds.x, torch.from_numpy(_images(3)).permute(0, 3, 1, 2)) and ds.y.tolist() == [2, 0, 1]


def test_keys_are_detected_when_only_one_array_fits_each_role(tmp_path):
    np.savez(tmp_path / "test.npz", images=_images(3), labels=np.array([2, 0, 1]), names=np.array(["a", "b", "c"]),
             ids=np.arange(5))  # a string array and an integer array of another length are neither labels
    ds = load_dataset(str(tmp_path / "test.npz"), "test")
    assert torch.equal(ds.x, torch.from_numpy(_images(3)).permute(0, 3, 1, 2)) and ds.y.tolist() == [2, 0, 1]


def test_ambiguous_keys_are_one_error_naming_every_array(tmp_path):
    np.savez(tmp_path / "test.npz", x_train=_images(3), y_train=np.array([0, 1, 1], np.uint8), x_test=_images(2),
             y_test=np.array([1, 0], np.uint8))  # the keras layout: several candidates
    with pytest.raises(UserError) as err:
        load_dataset(str(tmp_path), "test")
    message = str(err.value)
    assert "2 arrays that could be the images" in message and "data.x_key=KEY" in message and "--x-key" in message
    assert "x_train (uint8 3×4×5×3)" in message and "y_test (uint8 2)" in message
    assert load_dataset(str(tmp_path), "test", x_key="x_test", y_key="y_test").y.tolist() == [1, 0]


def test_a_named_key_that_is_missing_names_what_the_file_has(tmp_path):
    np.savez(tmp_path / "test.npz", x=_images(2), y=np.array([0, 1]))
    with pytest.raises(UserError, match=r"has no array 'img' \(it has x \(uint8 2×4×5×3\), y \(int64 2\)\)"):
        load_dataset(str(tmp_path), "test", x_key="img")


def test_keys_are_refused_for_data_that_is_not_npz(tmp_path, make_tree):
    make_tree(tmp_path / "tree", {"test": {"a": 1}})
    with pytest.raises(UserError, match="x_key .* not .npz"):
        load_dataset(str(tmp_path / "tree"), "test", x_key="images")


def test_a_single_file_whose_name_names_no_split_is_the_training_data(tmp_path):
    np.savez(tmp_path / "mydata.npz", x=_images(4), y=np.array([0, 1, 0, 1]))
    assert load_dataset(str(tmp_path / "mydata.npz"), "train_full").y.tolist() == [0, 1, 0, 1]
    with pytest.raises(UserError, match="no 'test' split .*data.test_fraction"):
        load_dataset(str(tmp_path / "mydata.npz"), "test")
