"""The folded attack view: same function as the eval-mode model, tracks live weights, rebuilt on structure change."""

import pytest
import torch
from torch import nn

from robustft.attacks.fold import folded_view
from robustft.models import create_model


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", ["cifar_resnet20", "preact_resnet18", "wide_resnet28_10", "resnet18"])
def test_view_matches_eval_model(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **({"widen_factor": 2} if "wide" in name else {})).eval()
    _randomize_bn(model)
    x = torch.rand(2, 3, 32, 32)
    view = folded_view(model)
    assert any(type(m).__name__ == "_FoldedConv" for m in view.modules())
    with torch.no_grad():
        assert torch.allclose(view(x), model(x), atol=1e-4, rtol=1e-4)


def test_view_follows_weight_updates_and_is_cached(tiny_model):
    x = torch.rand(4, 3, 8, 8)
    view = folded_view(tiny_model)
    assert folded_view(tiny_model) is view
    with torch.no_grad():
        tiny_model.features[0].weight.mul_(1.5)
        tiny_model.features[1].running_mean.add_(0.3)
        assert torch.allclose(view(x), tiny_model(x), atol=1e-5)


def test_structure_change_rebuilds_and_models_without_bn_are_returned_as_is(tiny_model):
    assert folded_view(tiny_model) is not tiny_model
    tiny_model.features[1] = nn.Identity()
    assert folded_view(tiny_model) is tiny_model
    vit = create_model("vit", num_classes=10)
    assert folded_view(vit) is vit
