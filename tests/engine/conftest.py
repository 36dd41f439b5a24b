"""Fixtures for end-to-end engine runs: a tiny learnable npz task and a source checkpoint."""

from pathlib import Path

import numpy as np
import pytest
import torch

from robustft.models import create_model, save_state_dict


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
