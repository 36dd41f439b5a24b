"""Shared fixtures: a tiny BN conv net and a batch, a tiny learnable task for end-to-end runs, ../shared."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustft.models import create_model, save_state_dict

SHARED = Path(os.environ.get("ROBUSTFT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


class TinyNet(nn.Module):
    """Conv-BN-ReLU-pool-linear: small enough for exhaustive attack tests, has BN so modes matter."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Test tensors are tiny: one intra-op thread is fastest and spares a shared machine (as run_env does for
    child processes). Session-wide, so every fixture and test computes with the same thread count (bit-exact
    comparisons of logits depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics so train and eval modes differ
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(32, 3, 8, 8, generator=g), torch.randint(0, 4, (32,), generator=g)


@pytest.fixture
def npz_data(tmp_path) -> Path:
    """An npz dataset dir: test.npz (20 random 32x32 images) and train.npz (40), labels i % 10."""
    rng = np.random.default_rng(0)
    root = tmp_path / "npz"
    root.mkdir()
    np.savez(root / "test.npz", x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y=np.arange(20) % 10)
    np.savez(root / "train.npz", x=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), y=np.arange(40) % 10)
    return root


@pytest.fixture
def ckpt(tmp_path) -> Path:
    """A 10-class CIFAR ResNet-20 state dict at its default width (what ``--arch cifar_resnet20`` builds)."""
    torch.manual_seed(0)
    return save_state_dict(create_model("cifar_resnet20", num_classes=10), tmp_path / "m.pt")


@pytest.fixture
def shared_dir() -> Path:
    """../shared (benchmark data); skipped when absent, but a hard failure under CI, where it must exist."""
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI run without the shared data directory {SHARED}")
        pytest.skip(f"benchmark data {SHARED} not present")
    return SHARED


def _make(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes on noise: red, green or blue tint (0-2) or none (3) — invariant to crops and flips, learnt fast."""
    y = np.arange(n) % 4
    x = rng.integers(0, 150, (n, 32, 32, 3)).astype(np.uint8)
    tinted = np.flatnonzero(y < 3)
    x[tinted, :, :, y[tinted]] += 100
    return x, y


@pytest.fixture(scope="session")
def tiny_task(tmp_path_factory) -> tuple[Path, Path]:
    """(npz data dir with train/test, source checkpoint path)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for split, n in (("train", 320), ("test", 48)):
        x, y = _make(rng, n)
        np.savez(root / f"{split}.npz", x=x, y=y)
    torch.manual_seed(0)
    ckpt = root / "source.pt"
    save_state_dict(create_model("cifar_resnet20", num_classes=4, width=4), ckpt)
    return root, ckpt


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the ``cuda``-marked tests run on: $ROBUSTFT_TEST_DEVICE, else CUDA where present, else the CPU
    (so they run, and must pass, in every suite; ``pytest -m cuda`` selects them)."""
    spec = os.environ.get("ROBUSTFT_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"ROBUSTFT_TEST_DEVICE={spec} but this torch has no CUDA device")
    return torch.device(spec)
