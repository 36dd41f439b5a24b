"""Every registered architecture runs forward/backward, handles channels_last, and has the reference layout."""

import pytest
import torch
from torch import nn

from robustft.models import Normalize, create_model, list_models

# name -> (constructor options, input resolution): small inputs keep the whole table to a few seconds on 2 cores.
TEST_CASES = {
    "cifar_resnet18": ({}, 32),
    "cifar_resnet34": ({}, 32),
    "cifar_resnet20": ({}, 32),
    "cifar_resnet32": ({}, 32),
    "cifar_resnet56": ({}, 32),
    "preact_resnet18": ({}, 32),
    "wide_resnet28_10": ({}, 32),
    "wide_resnet34_10": ({}, 32),
    "resnet18": ({}, 64),
    "resnet50": ({}, 64),
    "wide_resnet50_2": ({"widths": (16, 32, 64, 128)}, 64),
    "vit": ({}, 32),
    "vit_small_patch16_224": ({"img_size": 32}, 32),
    "vit_base_patch16_224": ({"img_size": 32}, 32),
    "swin": ({}, 32),
    "swin_base_patch4_window7_224": ({"img_size": 32, "window_size": 2}, 32),
}


def test_table_covers_every_registered_model():
    assert set(TEST_CASES) == set(list_models())


@pytest.mark.parametrize("name", sorted(TEST_CASES))
def test_forward_backward_and_channels_last(name):
    options, size = TEST_CASES[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options).eval()
    x = torch.rand(2, 3, size, size, requires_grad=True)

    logits = model(x)
    assert logits.shape == (2, 3)
    logits.logsumexp(dim=1).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    with torch.no_grad():
        logits_cl = model(x.detach().contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits_cl, logits.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(TEST_CASES))
def test_model_contract(name):
    """normalize first with [1,3,1,1] buffers (not parameters), a named linear head, a complete pretrained_cfg."""
    with torch.device("meta"):
        model = create_model(name, num_classes=5, **TEST_CASES[name][0])
    first_name, first = next(iter(model.named_children()))
    assert (first_name, type(first)) == ("normalize", Normalize)
    assert first.mean.shape == first.std.shape == (1, 3, 1, 1)
    assert not any(n.startswith("normalize.") for n, _ in model.named_parameters())
    cfg = model.pretrained_cfg
    assert cfg.architecture == name
    assert cfg.input_size[0] == 3 and cfg.normalization in ("none", "imagenet")
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head is getattr(model, cfg.classifier) and head.out_features == 5


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet18", 11_689_512),
        ("resnet50", 25_557_032),
        ("wide_resnet50_2", 68_883_240),
        ("cifar_resnet18", 11_173_962),
        ("cifar_resnet34", 21_282_122),
        ("wide_resnet34_10", 46_160_474),
        ("vit_small_patch16_224", 22_050_664),
        ("vit_base_patch16_224", 86_567_656),
    ],
)
def test_parameter_count_matches_reference_implementation(name, expected):
    """Counts of torchvision / kuangliu / TRADES / timm with their default class counts (1000 or 10)."""
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize(
    "name, present, absent",
    [
        (
            "resnet50",
            {"conv1.weight": (64, 3, 7, 7), "layer4.2.bn3.running_var": (2048,),
             "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.weight": (256,),
             "layer3.5.conv2.weight": (256, 256, 3, 3), "fc.weight": (1000, 2048), "fc.bias": (1000,)},
            ["layer1.1.downsample.0.weight", "layer4.3.conv1.weight"],
        ),
        (
            "wide_resnet50_2",  # torchvision's wide_resnet50_2: the bottleneck's inner convs twice as wide
            {"layer1.0.conv1.weight": (128, 64, 1, 1), "layer1.0.conv2.weight": (128, 128, 3, 3),
             "layer1.0.conv3.weight": (256, 128, 1, 1), "layer4.2.bn2.running_var": (1024,), "fc.weight": (1000, 2048)},
            ["layer4.3.conv1.weight"],
        ),
        (
            "resnet18",
            {"layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.num_batches_tracked": (),
             "fc.weight": (1000, 512)},
            ["layer1.0.downsample.0.weight", "layer1.0.conv3.weight"],
        ),
        (
            "cifar_resnet18",
            {"conv1.weight": (64, 3, 3, 3), "bn1.weight": (64,), "layer2.0.shortcut.0.weight": (128, 64, 1, 1),
             "layer2.0.shortcut.1.running_mean": (128,), "linear.weight": (10, 512)},
            ["fc.weight", "layer1.0.shortcut.0.weight", "layer2.0.downsample.0.weight"],
        ),
        (
            "cifar_resnet34",  # kuangliu ResNet34 (RiFT's): 3, 4, 6, 3 blocks; its lowest-MRC modules layer2.3.conv2,
            # layer3.5.conv2
            {"layer2.3.conv2.weight": (128, 128, 3, 3), "layer3.5.conv2.weight": (256, 256, 3, 3),
             "layer4.0.shortcut.0.weight": (512, 256, 1, 1), "layer4.2.bn2.running_var": (512,),
             "linear.weight": (10, 512)},
            ["layer4.3.conv1.weight", "layer3.6.conv1.weight", "fc.weight"],
        ),
        (
            "preact_resnet18",
            {"conv1.weight": (64, 3, 3, 3), "layer1.0.bn1.weight": (64,), "layer2.0.bn1.weight": (64,),
             "layer2.0.shortcut.0.weight": (128, 64, 1, 1), "bn.weight": (512,), "linear.weight": (10, 512)},
            ["bn1.weight", "layer2.0.shortcut.1.weight", "layer1.0.shortcut.0.weight"],
        ),
        (
            "wide_resnet34_10",
            {"conv1.weight": (16, 3, 3, 3), "block1.layer.0.bn1.weight": (16,),
             "block1.layer.0.convShortcut.weight": (160, 16, 1, 1),
             "block2.layer.0.convShortcut.weight": (320, 160, 1, 1),
             "block3.layer.4.conv2.weight": (640, 640, 3, 3), "bn1.running_var": (640,), "fc.weight": (10, 640)},
            ["block1.layer.1.convShortcut.weight", "block3.layer.5.conv1.weight", "sub_block1.layer.0.conv1.weight"],
        ),
        (
            "vit_base_patch16_224",
            {"patch_embed.proj.weight": (768, 3, 16, 16), "patch_embed.proj.bias": (768,), "cls_token": (1, 1, 768),
             "pos_embed": (1, 197, 768), "blocks.11.norm1.weight": (768,), "blocks.11.attn.qkv.weight": (2304, 768),
             "blocks.0.attn.proj.bias": (768,), "blocks.0.mlp.fc1.weight": (3072, 768),
             "blocks.0.mlp.fc2.weight": (768, 3072), "norm.bias": (768,), "head.weight": (1000, 768)},
            ["blocks.12.norm1.weight", "fc_norm.weight"],
        ),
    ],
)
def test_parameter_names_follow_reference_layout(name, present, absent):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in create_model(name).state_dict().items()}
    assert {k: shapes.get(k) for k in present} == present
    assert not set(absent) & shapes.keys()


def test_cifar_resnet20_width_and_depth_options():
    with torch.device("meta"):
        wide = create_model("cifar_resnet20", width=32)
        deep = create_model("cifar_resnet56")
    assert wide.state_dict()["layer3.0.conv1.weight"].shape == (128, 64, 3, 3)
    assert "layer1.8.conv2.weight" in deep.state_dict() and "layer1.9.conv2.weight" not in deep.state_dict()


def test_reset_classifier_keeps_device_dtype_and_reinitializes():
    model = create_model("cifar_resnet20").to(torch.float64)
    old = model.get_classifier()
    model.reset_classifier(100)
    new = model.get_classifier()
    assert new is model.fc and new is not old
    assert (new.in_features, new.out_features) == (64, 100)
    assert new.weight.dtype == torch.float64 and new.weight.device == old.weight.device
    assert model(torch.rand(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 100)


def test_reset_classifier_uses_each_layouts_head_name():
    model = create_model("cifar_resnet18")
    model.reset_classifier(4)
    assert model.linear.out_features == 4 and not hasattr(model, "fc")


def test_resnet_resize_input_is_nearest_upsampling_inside_the_model():
    """``resize_input`` (AutoLoRa's 224-px pipeline on CIFAR): the model sees the nearest-upsampled image, its input
    (and so an attack's gradient) stays at the small size, and the folded attack view traces through it."""
    from robustft.attacks import PGD
    from robustft.attacks.fold import folded_view

    torch.manual_seed(0)
    resized = create_model("cifar_resnet20", num_classes=3, width=4, resize_input=64).eval()
    plain = create_model("cifar_resnet20", num_classes=3, width=4).eval()
    plain.load_state_dict(resized.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(resized(x), plain(torch.nn.functional.interpolate(x, size=64, mode="nearest")))
        assert not torch.allclose(resized(x), plain(x))
    adv = PGD(steps=1).perturb(resized, x, torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and folded_view(resized) is not resized
    with pytest.raises(Exception, match="resize_input"):
        create_model("cifar_resnet20", resize_input=0)


def _official_kuangliu_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Transcription of the official RiFT forwards (models/resnet.py, models/wide_resnet.py): ResNet ``avg_pool2d(out,
    4)`` after layer4, WideResNet ``avg_pool2d(out, 8)`` after the final bn-relu, both then flattened into the head."""
    if hasattr(model, "layer4"):
        out = model.relu(model.bn1(model.conv1(x)))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            out = getattr(model, name)(out)
        return model.linear(torch.nn.functional.avg_pool2d(out, 4).reshape(x.shape[0], -1))
    out = model.block3(model.block2(model.block1(model.conv1(x))))
    return model.fc(torch.nn.functional.avg_pool2d(model.relu(model.bn1(out)), 8).reshape(x.shape[0], -1))


@pytest.mark.parametrize(("name", "options", "features"), [
    ("cifar_resnet18", {}, 2048), ("cifar_resnet34", {}, 2048), ("wide_resnet34_10", {"widen_factor": 1}, 256)])
def test_kuangliu_nets_at_64_px_read_2x2_pooled_cells_as_rift_tiny_imagenet(name, options, features):
    """``img_size=64`` (RiFT's --input_size 64): the head's width is the official 4 x C, the logits the official
    forward's on the same weights, and the 32-px net is unchanged (one global average)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=200, img_size=64, **options).eval()
    assert model.get_classifier().in_features == features and model.pretrained_cfg.input_size == (3, 64, 64)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _official_kuangliu_logits(model, x))
        small = create_model(name, num_classes=10, **options).eval()
        x32 = x[..., :32, :32]
        torch.testing.assert_close(small(x32), _official_kuangliu_logits(small, x32))
    with pytest.raises(Exception, match="multiple of 32"):
        create_model(name, img_size=48, **options)


def test_a_64_px_checkpoint_loads_only_into_the_model_built_for_it(tmp_path):
    """RiFT's Tiny-ImageNet ResNet-18 checkpoint (head 200 x 2048) loads with img_size 64; into the 32-px net it is
    refused with the option to set, not a bare shape mismatch."""
    from robustft.models import load_checkpoint, save_state_dict

    path = save_state_dict(create_model("cifar_resnet18", num_classes=200, img_size=64, widths=(8, 8, 8, 8)),
                           tmp_path / "tiny.pt")
    model = load_checkpoint("cifar_resnet18", path, img_size=64, widths=(8, 8, 8, 8))
    assert model.linear.weight.shape == (200, 32)
    with pytest.raises(Exception, match="img_size 64"):
        load_checkpoint("cifar_resnet18", path, widths=(8, 8, 8, 8))
    with pytest.raises(Exception, match="shape mismatch") as wider:  # another body: no img_size advice
        load_checkpoint("cifar_resnet18", path, widths=(2, 2, 2, 2))
    assert "img_size" not in str(wider.value)
    with pytest.raises(Exception, match="ImageNet ResNet pools globally"):
        create_model("resnet18", img_size=64)
