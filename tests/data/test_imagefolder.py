"""Image folders: directory vs zip equivalence, pixel exactness, errors, and the decode cache."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustft.data import imagefolder, load_dataset
from robustft.errors import UserError

SPEC = {"train": {"dog": 2, "ant": 3, "cat": 2}, "test": {"cat": 1, "ant": 2, "dog": 1}}


@pytest.fixture
def tree(tmp_path: Path, make_tree) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "folder"
    return root, make_tree(root, SPEC)


@pytest.mark.parametrize("split", ["train_full", "test"])
def test_directory_and_zips_load_identical_pixels_and_labels(tmp_path, tree, zip_tree, split):
    root, pixels = tree
    specs = [str(root), str(zip_tree(root, tmp_path / "plain.zip")),
             str(zip_tree(root, tmp_path / "wrapped.zip", wrapper="folder")), f"imagefolder:{root}"]
    loaded = [load_dataset(spec, split, val_fraction=0) for spec in specs]
    raw = split.removesuffix("_full")
    files = sorted(p for p in pixels if p.startswith(f"{raw}/"))  # canonical order: sorted paths
    expected_x = torch.from_numpy(np.stack([pixels[p] for p in files])).permute(0, 3, 1, 2)
    expected_y = torch.tensor([["ant", "cat", "dog"].index(p.split("/")[1]) for p in files])
    for ds in loaded:
        assert ds.classes == ["ant", "cat", "dog"]
        assert ds.x.dtype == torch.uint8 and ds.x.is_contiguous()
        assert torch.equal(ds.x, expected_x)
        assert torch.equal(ds.y, expected_y)
    assert [ds.name for ds in loaded] == ["folder", "plain", "wrapped", "folder"]


def test_explicit_val_directory_is_used_and_train_stays_whole(tmp_path, make_tree):
    root = tmp_path / "tree"
    make_tree(root, {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 2}})
    assert len(load_dataset(str(root), "val")) == 3
    assert len(load_dataset(str(root), "train")) == 6


def test_subset_of_image_folder_is_evenly_spread_over_grouped_classes(tmp_path, make_tree):
    root = tmp_path / "tree"
    make_tree(root, {"train": {"a": 4, "b": 4, "c": 4}})
    ds = load_dataset(str(root), "train_full", n=6)
    assert ds.y.tolist() == [0, 0, 1, 1, 2, 2]


def _truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:200]


@pytest.mark.parametrize("as_zip", [False, True])
def test_corrupt_jpeg_error_names_the_file(tmp_path, tree, zip_tree, as_zip):
    root, _ = tree
    (root / "train" / "cat" / "broken.jpg").write_bytes(_truncated_jpeg())
    spec = zip_tree(root, tmp_path / "data.zip") if as_zip else root
    with pytest.raises(UserError, match=r"train/cat/broken\.jpg") as err:
        load_dataset(str(spec), "train")
    if as_zip:
        assert "data.zip" in str(err.value)


def test_mixed_sizes_need_image_size(tmp_path, make_tree):
    root = tmp_path / "tree"
    make_tree(root, {"train": {"a": 2}}, size=6)
    make_tree(root, {"train": {"b": 1}}, size=9)
    with pytest.raises(UserError, match="image_size"):
        load_dataset(str(root), "train_full")
    assert load_dataset(str(root), "train_full", image_size=5).x.shape == (3, 3, 5, 5)


def test_test_class_missing_from_train_is_refused(tmp_path, make_tree):
    root = tmp_path / "tree"
    make_tree(root, {"train": {"a": 1}, "test": {"a": 1, "zebra": 1}})
    with pytest.raises(UserError, match="zebra"):
        load_dataset(str(root), "test")


def test_tree_without_split_directories_is_refused(tmp_path, make_tree):
    make_tree(tmp_path / "tree", {"training": {"a": 1}})
    with pytest.raises(UserError, match="no images found"):
        load_dataset(str(tmp_path / "tree"), "test")


def test_cache_hit_returns_the_same_data_without_reading_a_member(tmp_path, tree, zip_tree, isolated_cache,
                                                                   monkeypatch):
    archive = zip_tree(tree[0], tmp_path / "data.zip")
    first = load_dataset(str(archive), "train")
    assert len(list((isolated_cache / "decoded").glob("*.pt"))) == 1  # the decoded train split

    def refuse(*args, **kwargs):
        raise AssertionError("a zip member was read despite a cache hit")
    monkeypatch.setattr(imagefolder.zipfile.ZipFile, "open", refuse)  # the central directory alone is the key
    second = load_dataset(str(archive), "train")
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y) and first.classes == second.classes


def test_cache_is_invalidated_when_the_zip_changes(tmp_path, make_tree, zip_tree):
    archive = tmp_path / "data.zip"
    make_tree(tmp_path / "v1", {"test": {"a": 2}}, seed=1)
    before = load_dataset(str(zip_tree(tmp_path / "v1", archive)), "test")
    make_tree(tmp_path / "v2", {"test": {"a": 2}}, seed=2)
    after = load_dataset(str(zip_tree(tmp_path / "v2", archive)), "test")
    assert not torch.equal(before.x, after.x)


def test_cache_false_writes_nothing(tree, isolated_cache):
    load_dataset(str(tree[0]), "test", cache=False)
    assert not isolated_cache.exists()


def test_a_file_that_is_not_a_zip_is_a_user_error(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="fake.zip"):
        load_dataset(str(tmp_path / "fake.zip"))


def test_square_image_size_is_the_exact_full_decode_and_resize(tmp_path):
    """``image_size`` squashes with PIL's full decode + bilinear resize, never the DCT-domain draft (which the stored
    views use): a 32-px JPEG at 16 px gives the pixels the committed protocol results were measured on."""
    rng = np.random.default_rng(0)
    expected = []
    for label in ("a", "b"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(3):
            path = tmp_path / "train" / label / f"{i}.jpg"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, quality=90)
            with Image.open(path) as image:
                expected.append(np.asarray(image.convert("RGB").resize((16, 16), Image.BILINEAR)))
    ds = load_dataset(tmp_path, "train_full", image_size=16, cache=False)
    assert np.array_equal(ds.x.permute(0, 2, 3, 1).numpy(), np.stack(expected))
