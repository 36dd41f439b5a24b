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


def test_weight_space_lora_is_the_two_conv_form_and_folds_into_one_conv():
    """LoRA on a conv applied as one conv with W + s·BA computes what peft's base(x) + s·B(A(x)) computes, with the
    same parameter gradients, and the attack view folds the following BN into it."""
    from robustft.methods.peft import add_lora

    torch.manual_seed(0)
    model = create_model("cifar_resnet20", num_classes=10, width=8).eval()
    _randomize_bn(model)
    layers = add_lora(model, rank=2, alpha=4.0)
    with torch.no_grad():
        for m in layers:
            m.lora_B.weight.normal_(0, 0.2)
    x = torch.rand(3, 3, 16, 16)
    for m in layers[:3]:
        h = torch.rand(2, m.base_layer.in_channels, 8, 8, requires_grad=True)
        two_conv = m.base_layer(h) + m.lora_B(m.lora_A(h)) * m.scaling
        one_conv = m(h)
        assert torch.allclose(one_conv, two_conv, atol=1e-5)
        grads = [torch.autograd.grad(out.square().sum(), [h, m.lora_A.weight, m.lora_B.weight])
                 for out in (one_conv, two_conv)]
        for g1, g2 in zip(*grads, strict=True):
            assert torch.allclose(g1, g2, atol=1e-4, rtol=1e-4)
    view = folded_view(model)
    folded = [m for m in view.modules() if type(m).__name__ == "_FoldedConv"]
    assert len(folded) == 21 and all(type(f.conv).__name__ == "LoRAConv2d" for f in folded), \
        "every conv→BN pair of the LoRA model folds (21: stem, 18 residual convs, 2 projection shortcuts)"
    with torch.no_grad():
        assert torch.allclose(view(x), model(x), atol=1e-4, rtol=1e-4)
