"""Exports strict-load into timm 1.x: the export's keys and shapes equal the state dict of the timm model, transcribed
here from timm's source (huggingface/pytorch-image-models aa4b585: models/resnet.py, vision_transformer.py,
swin_transformer.py); timm itself does not import on the CPU test machines. And the timm ``config.json`` beside a
directory export, read back by robustft and by timm's conventions."""

import json
import math

import pytest
import safetensors.torch
import torch

from robustft.cli import main
from robustft.models import create_model, load_checkpoint
from robustft.models.export import TIMM_ARCHITECTURES, timm_config, timm_state_dict
from support import finetune_args

Shapes = dict[str, tuple[int, ...]]


def _linear(name: str, fan_in: int, fan_out: int, bias: bool = True) -> Shapes:
    return {f"{name}.weight": (fan_out, fan_in), **({f"{name}.bias": (fan_out,)} if bias else {})}


def _norm(name: str, dim: int) -> Shapes:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def _bn(name: str, dim: int) -> Shapes:
    return {**_norm(name, dim), f"{name}.running_mean": (dim,), f"{name}.running_var": (dim,),
            f"{name}.num_batches_tracked": ()}


def timm_resnet(layers: tuple[int, ...], bottleneck: bool, base_width: int = 64, num_classes: int = 1000) -> Shapes:
    """timm ``ResNet(block, layers, base_width)``: stem conv1/bn1, ``layer{1..4}.<i>`` blocks whose ``downsample``
    is Sequential(conv 1x1, BN) when stride or width change, ``fc``. Bottleneck: width = planes * base_width / 64,
    conv1 1x1 in->width, conv2 3x3 width->width, conv3 1x1 width->4*planes; BasicBlock: two 3x3."""
    out: Shapes = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes, expansion = 64, 4 if bottleneck else 1
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers)):
        for i in range(depth):
            p = f"layer{stage + 1}.{i}"
            if bottleneck:
                width = int(math.floor(planes * (base_width / 64)))
                out.update({f"{p}.conv1.weight": (width, inplanes, 1, 1), **_bn(f"{p}.bn1", width),
                            f"{p}.conv2.weight": (width, width, 3, 3), **_bn(f"{p}.bn2", width),
                            f"{p}.conv3.weight": (planes * 4, width, 1, 1), **_bn(f"{p}.bn3", planes * 4)})
            else:
                out.update({f"{p}.conv1.weight": (planes, inplanes, 3, 3), **_bn(f"{p}.bn1", planes),
                            f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes)})
            stride = 2 if stage and i == 0 else 1
            if i == 0 and (stride != 1 or inplanes != planes * expansion):
                out.update({f"{p}.downsample.0.weight": (planes * expansion, inplanes, 1, 1),
                            **_bn(f"{p}.downsample.1", planes * expansion)})
            inplanes = planes * expansion
    return {**out, **_linear("fc", inplanes, num_classes)}


def timm_vit(img_size: int, patch_size: int, embed_dim: int, depth: int, mlp_ratio: float = 4.0,
             num_classes: int = 1000) -> Shapes:
    """timm ``VisionTransformer`` (class token, ``global_pool='token'``): ``cls_token``, ``pos_embed`` over
    patches + class token, ``patch_embed.proj``, blocks (norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2; q_norm,
    k_norm, ls1/ls2, norm_pre and fc_norm are Identity), ``norm``, ``head``."""
    hidden = int(embed_dim * mlp_ratio)
    out: Shapes = {"cls_token": (1, 1, embed_dim), "pos_embed": (1, (img_size // patch_size) ** 2 + 1, embed_dim),
                   "patch_embed.proj.weight": (embed_dim, 3, patch_size, patch_size),
                   "patch_embed.proj.bias": (embed_dim,)}
    for i in range(depth):
        p = f"blocks.{i}"
        out.update({**_norm(f"{p}.norm1", embed_dim), **_linear(f"{p}.attn.qkv", embed_dim, 3 * embed_dim),
                    **_linear(f"{p}.attn.proj", embed_dim, embed_dim), **_norm(f"{p}.norm2", embed_dim),
                    **_linear(f"{p}.mlp.fc1", embed_dim, hidden), **_linear(f"{p}.mlp.fc2", hidden, embed_dim)})
    return {**out, **_norm("norm", embed_dim), **_linear("head", embed_dim, num_classes)}


def timm_swin(img_size: int, patch_size: int, embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...],
              window_size: int, mlp_ratio: float = 4.0, num_classes: int = 1000) -> Shapes:
    """timm 1.x ``SwinTransformer``: ``patch_embed.{proj, norm}``; stage i > 0 starts with
    ``layers.<i>.downsample`` = PatchMerging(norm over 4*in, reduction in*4 -> out without bias); blocks (norm1,
    attn.relative_position_bias_table [(2w-1)^2, heads] with w the window clamped to the stage's resolution,
    attn.qkv, attn.proj, norm2, mlp.fc1/fc2); relative_position_index and attn_mask are non-persistent; ``norm``,
    ``head.fc`` (ClassifierHead)."""
    grid = img_size // patch_size
    out: Shapes = {"patch_embed.proj.weight": (embed_dim, 3, patch_size, patch_size),
                   "patch_embed.proj.bias": (embed_dim,), **_norm("patch_embed.norm", embed_dim)}
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim, resolution = embed_dim * 2 ** i, grid // 2 ** i
        if i > 0:
            out.update({**_norm(f"layers.{i}.downsample.norm", 2 * dim),
                        **_linear(f"layers.{i}.downsample.reduction", 2 * dim, dim, bias=False)})
        window = min(window_size, resolution)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}"
            out.update({**_norm(f"{p}.norm1", dim), f"{p}.attn.relative_position_bias_table": ((2 * window - 1) ** 2,
                                                                                                heads),
                        **_linear(f"{p}.attn.qkv", dim, 3 * dim), **_linear(f"{p}.attn.proj", dim, dim),
                        **_norm(f"{p}.norm2", dim), **_linear(f"{p}.mlp.fc1", dim, int(dim * mlp_ratio)),
                        **_linear(f"{p}.mlp.fc2", int(dim * mlp_ratio), dim)})
    features = embed_dim * 2 ** (len(depths) - 1)
    return {**out, **_norm("norm", features), **_linear("head.fc", features, num_classes)}


# Each shared architecture and its timm model's state dict (the timm defaults of that model name, or model_args).
TIMM_MODELS = {
    "resnet18": timm_resnet((2, 2, 2, 2), bottleneck=False),
    "resnet50": timm_resnet((3, 4, 6, 3), bottleneck=True),
    "wide_resnet50_2": timm_resnet((3, 4, 6, 3), bottleneck=True, base_width=128),
    "vit_small_patch16_224": timm_vit(224, 16, 384, 12),
    "vit_base_patch16_224": timm_vit(224, 16, 768, 12),
    "vit": timm_vit(32, 4, 192, 6, num_classes=10),
    "swin_base_patch4_window7_224": timm_swin(224, 4, 128, (2, 2, 18, 2), (4, 8, 16, 32), 7),
    "swin": timm_swin(32, 2, 16, (2, 2, 2), (1, 2, 4), 4, num_classes=10),
}


def test_every_architecture_shared_with_timm_is_covered():
    assert set(TIMM_MODELS) == set(TIMM_ARCHITECTURES)


@pytest.mark.parametrize("arch", list(TIMM_MODELS))
def test_export_has_exactly_the_timm_1x_keys_and_shapes(arch):
    with torch.device("meta"):
        model = create_model(arch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    exported = {k: tuple(v.shape) for k, v in timm_state_dict(state, model).items()}
    expected = TIMM_MODELS[arch]
    assert sorted(exported.keys() - expected.keys()) == [] and sorted(expected.keys() - exported.keys()) == []
    assert exported == expected


def test_config_json_rebuilds_the_tiny_variants_with_timm_model_args():
    swin = timm_config(create_model("swin", 4), list("abcd"), [0.5] * 3, [0.25] * 3)
    assert swin["architecture"] == "swin_base_patch4_window7_224" and swin["num_classes"] == 4
    assert swin["model_args"] == dict(img_size=32, patch_size=2, embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 4],
                                      window_size=4, mlp_ratio=4.0)
    assert swin["pretrained_cfg"]["classifier"] == "head.fc" and swin["pretrained_cfg"]["input_size"] == [3, 32, 32]
    resnet = timm_config(create_model("resnet50", 3), list("abc"), [0.5] * 3, [0.25] * 3)
    assert "model_args" not in resnet and resnet["pretrained_cfg"]["first_conv"] == "conv1"


def test_swin_run_exports_a_timm_hub_directory_that_robustft_reads_back(tiny_task, tmp_path, capsys):
    data, _ = tiny_task
    torch.manual_seed(0)
    source = tmp_path / "swin_source.pt"
    torch.save(create_model("swin", 4).state_dict(), source)
    args = finetune_args(data, source, tmp_path, "sw", "--epochs", "1")
    args[args.index("cifar_resnet20")] = "swin"
    args[args.index("model.options.width=4") - 1:args.index("model.options.width=4") + 1] = []
    assert main(args) == 0, capsys.readouterr().err
    out = tmp_path / "swin_timm"
    assert main(["export", str(tmp_path / "sw"), "--out", str(out)]) == 0, capsys.readouterr().err
    assert "config.json" in capsys.readouterr().out

    state = safetensors.torch.load_file(out / "model.safetensors")
    assert {k: tuple(v.shape) for k, v in state.items()} == timm_swin(32, 2, 16, (2, 2, 2), (1, 2, 4), 4, num_classes=4)
    config = json.loads((out / "config.json").read_text())
    card = json.loads((out / "model.json").read_text())
    assert config["architecture"] == "swin_base_patch4_window7_224" and config["label_names"] == card["classes"]
    assert config["pretrained_cfg"]["mean"] == card["normalize"]["mean"] and config["num_classes"] == 4

    run_model = load_checkpoint("swin", tmp_path / "sw" / "model.pt").eval()
    exported = load_checkpoint("swin", out).eval()  # the hub directory: weights in timm 1.x names + config.json
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), run_model(x), rtol=0, atol=0)
    plain = tmp_path / "swin_plain.safetensors"
    assert main(["export", str(tmp_path / "sw"), "--out", str(plain)]) == 0
    assert set(safetensors.torch.load_file(plain)) == set(state)
    assert main(["evaluate", "--arch", "swin", "--checkpoint", str(plain), "--data", str(data), "--steps", "1",
                 "--n", "8"]) == 0, capsys.readouterr().err
