"""Published corruption benchmarks: the CIFAR-10-C array layout (severities stacked) and the Tiny-ImageNet-C folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from robustft.data import available_corruptions, load_corrupted
from robustft.errors import UserError
from robustft.eval import evaluate_corruptions

N = 6  # images per severity


@pytest.fixture
def cifar_c(tmp_path):
    """fog.npy / pixelate.npy with 5·N 8×8 RGB images (pixel value = severity·10 + index) and 5·N labels."""
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    for name in ("fog", "pixelate"):
        x = np.zeros((5 * N, 8, 8, 3), np.uint8)
        for s in range(5):
            for i in range(N):
                x[s * N + i] = (s + 1) * 10 + i
        np.save(root / f"{name}.npy", x)
    np.save(root / "labels.npy", np.tile(np.arange(N) % 3, 5).astype(np.uint8))
    return root


def test_array_layout(cifar_c):
    assert available_corruptions(cifar_c) == ["fog", "pixelate"]
    d = load_corrupted(cifar_c, "fog", 3)
    assert d.x.shape == (N, 3, 8, 8) and d.x.dtype == torch.uint8
    assert d.x[:, 0, 0, 0].tolist() == [30 + i for i in range(N)], "severity 3 is the third block of N images"
    assert d.y.tolist() == [i % 3 for i in range(N)] and d.y.dtype == torch.int64
    assert d.classes == ["0", "1", "2"] and d.name == "CIFAR-10-C-fog3"
    sub = load_corrupted(cifar_c, "pixelate", 5, n=3, classes=["a", "b", "c", "d"])
    assert sub.x[:, 0, 0, 0].tolist() == [50, 52, 54] and sub.classes == ["a", "b", "c", "d"]


def test_labels_given_once(cifar_c):
    np.save(cifar_c / "labels.npy", (np.arange(N) % 3).astype(np.int64))  # N labels instead of 5·N
    assert load_corrupted(cifar_c, "fog", 5).y.tolist() == [i % 3 for i in range(N)]


def test_errors(cifar_c, tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_corrupted(cifar_c, "snow", 1)
    with pytest.raises(UserError, match="1..5"):
        load_corrupted(cifar_c, "fog", 6)
    with pytest.raises(UserError, match="does not exist"):
        available_corruptions(tmp_path / "missing")
    with pytest.raises(UserError, match="class names"):
        load_corrupted(cifar_c, "fog", 1, classes=["a"])
    np.save(cifar_c / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(UserError, match="labels"):
        load_corrupted(cifar_c, "fog", 1)
    (cifar_c / "labels.npy").unlink()
    with pytest.raises(UserError, match="labels.npy"):
        available_corruptions(cifar_c)


def test_folder_layout(tmp_path):
    root = tmp_path / "Tiny-ImageNet-C"
    rng = np.random.default_rng(0)
    written = {}
    for cls in ("n01", "n02"):
        for s in (1, 2, 3, 4, 5):
            (root / "fog" / str(s) / cls).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "fog" / str(s) / cls / f"{i}.png")
                written[(s, cls, i)] = pixels
    assert available_corruptions(root) == ["fog"]
    d = load_corrupted(root, "fog", 2)
    assert d.classes == ["n01", "n02"] and d.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(d.x[2].permute(1, 2, 0).numpy(), written[(2, "n02", 0)])
    given = load_corrupted(root, "fog", 2, classes=["n00", "n01", "n02"])
    assert given.y.tolist() == [1, 1, 2, 2]
    with pytest.raises(UserError, match="not among"):
        load_corrupted(root, "fog", 2, classes=["n01"])


def test_evaluate_on_published_files(cifar_c, tiny_model):
    res = evaluate_corruptions(tiny_model, None, "all", [1, 5], corruption_dir=cifar_c, n=4, batch_size=4)
    assert list(res.accuracy) == ["fog", "pixelate"] and res.severities == [1, 5] and res.n == 4
    assert res.source == str(cifar_c) and res.approximate == []
    with pytest.raises(UserError, match="not available"):
        evaluate_corruptions(tiny_model, None, "snow", 1, corruption_dir=cifar_c)
