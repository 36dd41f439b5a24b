"""Normalization specs, the Normalize layer and set_normalization."""

import pytest
import torch

from robustft.errors import UserError
from robustft.models import Normalize, create_model, describe_normalization, resolve_normalization, set_normalization


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
        ("none", ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
        ("cifar10", ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))),
        ("CIFAR100", ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))),
        ("imagenet", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
        ("0.5,0.5,0.5/0.25,0.25,0.25", ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))),
        (((0.1, 0.2, 0.3), [1, 2, 3]), ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))),
    ],
)
def test_resolve_normalization(spec, expected):
    assert resolve_normalization(spec) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "imagenette", "0.5,0.5/0.2,0.2", "0.5,0.5,0.5/0,1,1", "a,b,c/1,1,1", "1,1,1/1,1,1/1,1,1",
        (0.5, 0.5), 3, ((1, 2, 3),),
    ],
)
def test_bad_normalization_is_a_user_error(spec):
    with pytest.raises(UserError, match="bad normalization"):
        resolve_normalization(spec)


def test_normalize_layer_computes_standard_score():
    layer = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.ones(1, 3, 2, 2)
    assert torch.equal(layer(x)[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))
    assert set(layer.state_dict()) == {"mean", "std"}


def test_architecture_defaults_and_override():
    assert torch.equal(create_model("cifar_resnet20").normalize.std, torch.ones(1, 3, 1, 1))
    assert torch.allclose(create_model("resnet18").normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    model = create_model("cifar_resnet20", normalization="cifar10")
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))


def test_set_normalization_standardizes_inside_the_model():
    torch.manual_seed(0)
    model = create_model("cifar_resnet20").eval()  # identity normalization
    x = torch.rand(2, 3, 32, 32)
    mean, std = (torch.tensor(v).reshape(1, 3, 1, 1) for v in resolve_normalization("cifar10"))
    with torch.no_grad():
        standardized_outside = model((x - mean) / std)
        assert set_normalization(model, "cifar10") is model
        standardized_inside = model(x)
    torch.testing.assert_close(standardized_inside, standardized_outside)


def test_set_normalization_needs_a_normalize_layer():
    with pytest.raises(UserError, match="no Normalize layer"):
        set_normalization(torch.nn.Linear(2, 2), "cifar10")


@pytest.mark.parametrize("mean, std, expected", [
    ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "imagenet (mean 0.485,0.456,0.406, std 0.229,0.224,0.225)"),
    (torch.tensor([0.4914, 0.4822, 0.4465]).tolist(), torch.tensor([0.2471, 0.2435, 0.2616]).tolist(),
     "cifar10 (mean 0.4914,0.4822,0.4465, std 0.2471,0.2435,0.2616)"),  # float32 buffers still match the preset
    ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "mean 0.5,0.5,0.5, std 0.5,0.5,0.5"),
])
def test_describe_normalization_names_the_preset_it_matches(mean, std, expected):
    assert describe_normalization(mean, std) == expected
