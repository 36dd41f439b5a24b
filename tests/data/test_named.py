"""cifar10 / cifar100 / svhn in their official layouts, and the offline failure and success paths of download."""

import dataclasses
import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from robustft.data import default_data_root, load_dataset, named
from robustft.data.download import Remote
from robustft.errors import UserError

CIFAR10_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 2) -> dict[str, np.ndarray]:
    """The official ``cifar-10-batches-py`` layout (dicts with bytes keys), with random rows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = {}
    for i, name in enumerate(CIFAR10_FILES[:-1]):
        rows[name] = _rows(per_batch, seed=i)
        _dump(folder / name, {b"batch_label": name.encode(), b"data": rows[name],
                              b"labels": [(i + j) % 10 for j in range(per_batch)],
                              b"filenames": [f"{name}_{j}.png".encode() for j in range(per_batch)]})
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                     b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    return rows


def test_cifar10_official_layout(tmp_path):
    rows = write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train_full", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert train.classes == CIFAR10_NAMES and train.name == "cifar10"
    assert train.x.shape == (10, 3, 32, 32) and test.x.shape == (2, 3, 32, 32)
    assert train.y.tolist() == [(i + j) % 10 for i in range(5) for j in range(2)]
    assert test.y.tolist() == [5, 6]
    # Row layout: 1024 R, 1024 G, 1024 B bytes, each plane row-major: byte c*1024 + r*32 + col is x[c, r, col].
    row = rows["test_batch"][1]
    assert test.x[1, 0, 0, 1] == row[1] and test.x[1, 1, 2, 5] == row[1024 + 2 * 32 + 5]
    assert test.x[1, 2, 31, 31] == row[3071]
    assert torch.equal(train.x[2:4].reshape(2, -1), torch.from_numpy(rows["data_batch_2"]))


def test_cifar100_official_layout_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 3)):
        _dump(folder / name, {b"filenames": [b"f"] * n, b"batch_label": name.encode(), b"data": _rows(n, seed=n),
                              b"fine_labels": list(range(99, 99 - n, -1)), b"coarse_labels": [19] * n})
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    test = load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert test.classes[:2] == ["c0", "c1"] and test.num_classes == 100
    assert test.y.tolist() == [99, 98, 97]
    assert torch.equal(test.x.reshape(3, -1), torch.from_numpy(_rows(3, seed=3)))


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    (tmp_path / "svhn").mkdir()
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [9], [10]])})
    test = load_dataset("svhn", "test", root=tmp_path)
    assert test.y.tolist() == [0, 1, 9, 0] and test.classes == [str(d) for d in range(10)]
    assert test.x.shape == (4, 3, 32, 32)
    assert test.x[2, 1, 5, 7] == x[5, 7, 1, 2]  # x[n, c, h, w] == X[h, w, c, n]


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def _use_remote(monkeypatch: pytest.MonkeyPatch, url: str, md5: str) -> None:
    monkeypatch.setattr(named, "CIFAR10", dataclasses.replace(named.CIFAR10, remote=Remote(url, md5)))


def test_missing_files_without_download_say_where_to_put_them(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-batches-py/data_batch_1" in message
    assert "cifar-10-python.tar.gz" in message and "\n" not in message
    assert _tree(tmp_path) == []


def test_unreachable_download_is_one_user_error_and_leaves_nothing(tmp_path, monkeypatch):
    _use_remote(monkeypatch, "http://127.0.0.1:9/cifar-10-python.tar.gz", named.CIFAR10.remote.md5)
    with pytest.raises(UserError, match="failed") as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(tmp_path) in str(err.value) and "127.0.0.1:9" in str(err.value)
    assert _tree(tmp_path) == []


def _cifar10_tarball(tmp_path: Path) -> tuple[Path, str]:
    write_cifar10(tmp_path / "src")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", "cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = _cifar10_tarball(tmp_path)
    _use_remote(monkeypatch, archive.as_uri(), "0" * 32)
    (tmp_path / "root").mkdir()
    with pytest.raises(UserError, match="md5"):
        load_dataset("cifar10", root=tmp_path / "root")
    assert _tree(tmp_path / "root") == []


def test_download_extracts_into_place(tmp_path, monkeypatch):
    archive, md5 = _cifar10_tarball(tmp_path)
    _use_remote(monkeypatch, archive.as_uri(), md5)
    ds = load_dataset("cifar10", "test")  # default data root, under the isolated cache dir
    assert len(ds) == 2
    root = default_data_root()
    assert _tree(root) == ["cifar-10-batches-py", *(f"cifar-10-batches-py/{f}" for f in sorted(CIFAR10_FILES))]


def test_archive_escaping_the_data_root_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    (tmp_path / "evil").write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "evil", "../evil")
    _use_remote(monkeypatch, archive.as_uri(), hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "deep" / "root"
    root.mkdir(parents=True)
    with pytest.raises(UserError):
        load_dataset("cifar10", root=root)
    assert _tree(tmp_path / "deep") == ["root"]


def test_explicit_data_root_must_exist(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("cifar10", root=tmp_path / "nowhere")
    monkeypatch.setenv("ROBUSTFT_DATA", os.fspath(tmp_path / "elsewhere"))
    with pytest.raises(UserError, match="elsewhere"):
        load_dataset("svhn")
