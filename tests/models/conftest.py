"""Fixtures for the models tests: the shared reference checkpoint and a torchvision-layout ResNet-50."""

from pathlib import Path

import pytest
import torch

from robustft.models import create_model, set_normalization


@pytest.fixture
def reference_checkpoint(shared_dir: Path) -> Path:
    """The adversarially trained CIFAR-10 ResNet-20 in ../shared/models (skipped where that file is absent)."""
    path = shared_dir / "models" / "cifar10_resnet20_linf_at.pt"
    if not path.is_file():
        pytest.skip(f"reference checkpoint {path} is absent")
    return path


@pytest.fixture(scope="module")
def resnet50_setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(ResNet-50 in eval mode with non-default normalization, a 64-px batch, its logits); do not mutate."""
    torch.manual_seed(0)
    model = set_normalization(create_model("resnet50", num_classes=7), "cifar10").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
    return model, x, logits
