"""What each model declares for the parameter-efficient methods (``ModelCfg.fused_qkv`` / ``adapter_points``), and
that the methods layer needs nothing else: PEFT layers land exactly where they did when peft.py listed the
architectures itself, a model unknown to peft.py gets them where it declares, and the models import in any order."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import robustft
import robustft.methods.peft as peft
from robustft.errors import UserError
from robustft.methods.peft import Adapted, LoRAConv2d, LoRALinear, add_adapters, add_lora
from robustft.models import AdapterPoint, FusedQKV, ImageClassifier, ModelCfg, create_model

# (arch, options, LoRA-wrapped modules, adapted modules), in module order: the lists peft.py produced when it
# hard-coded the architectures' block classes (commit cd5d0d4), so declaring them in the model files moved nothing.
TEST_CASES = [
    ("vit", dict(depth=2, embed_dim=48, num_heads=3),
     "blocks.0.attn.qkv blocks.1.attn.qkv",
     "blocks.0.mlp blocks.1.mlp"),
    ("swin", {},
     "layers.0.blocks.0.attn.qkv layers.0.blocks.1.attn.qkv layers.1.blocks.0.attn.qkv "
     "layers.1.blocks.1.attn.qkv layers.2.blocks.0.attn.qkv layers.2.blocks.1.attn.qkv",
     "layers.0.blocks.0.mlp layers.0.blocks.1.mlp layers.1.blocks.0.mlp layers.1.blocks.1.mlp "
     "layers.2.blocks.0.mlp layers.2.blocks.1.mlp"),
    ("cifar_resnet18", {},
     "conv1 layer1.0.conv1 layer1.0.conv2 layer1.1.conv1 layer1.1.conv2 layer2.0.conv1 layer2.0.conv2 "
     "layer2.0.shortcut.0 layer2.1.conv1 layer2.1.conv2 layer3.0.conv1 layer3.0.conv2 layer3.0.shortcut.0 "
     "layer3.1.conv1 layer3.1.conv2 layer4.0.conv1 layer4.0.conv2 layer4.0.shortcut.0 layer4.1.conv1 "
     "layer4.1.conv2",
     "layer1.0 layer1.1 layer2.0 layer2.1 layer3.0 layer3.1 layer4.0 layer4.1"),
    ("cifar_resnet20", {},
     "conv1 layer1.0.conv1 layer1.0.conv2 layer1.1.conv1 layer1.1.conv2 layer1.2.conv1 layer1.2.conv2 "
     "layer2.0.conv1 layer2.0.conv2 layer2.0.downsample.0 layer2.1.conv1 layer2.1.conv2 layer2.2.conv1 "
     "layer2.2.conv2 layer3.0.conv1 layer3.0.conv2 layer3.0.downsample.0 layer3.1.conv1 layer3.1.conv2 "
     "layer3.2.conv1 layer3.2.conv2",
     "layer1.0 layer1.1 layer1.2 layer2.0 layer2.1 layer2.2 layer3.0 layer3.1 layer3.2"),
    ("resnet50", dict(widths=(8, 16, 32, 64)),
     "conv1 layer1.0.conv1 layer1.0.conv2 layer1.0.conv3 layer1.0.downsample.0 layer1.1.conv1 layer1.1.conv2 "
     "layer1.1.conv3 layer1.2.conv1 layer1.2.conv2 layer1.2.conv3 layer2.0.conv1 layer2.0.conv2 layer2.0.conv3 "
     "layer2.0.downsample.0 layer2.1.conv1 layer2.1.conv2 layer2.1.conv3 layer2.2.conv1 layer2.2.conv2 "
     "layer2.2.conv3 layer2.3.conv1 layer2.3.conv2 layer2.3.conv3 layer3.0.conv1 layer3.0.conv2 layer3.0.conv3 "
     "layer3.0.downsample.0 layer3.1.conv1 layer3.1.conv2 layer3.1.conv3 layer3.2.conv1 layer3.2.conv2 "
     "layer3.2.conv3 layer3.3.conv1 layer3.3.conv2 layer3.3.conv3 layer3.4.conv1 layer3.4.conv2 layer3.4.conv3 "
     "layer3.5.conv1 layer3.5.conv2 layer3.5.conv3 layer4.0.conv1 layer4.0.conv2 layer4.0.conv3 "
     "layer4.0.downsample.0 layer4.1.conv1 layer4.1.conv2 layer4.1.conv3 layer4.2.conv1 layer4.2.conv2 "
     "layer4.2.conv3",
     "layer1.0 layer1.1 layer1.2 layer2.0 layer2.1 layer2.2 layer2.3 layer3.0 layer3.1 layer3.2 layer3.3 "
     "layer3.4 layer3.5 layer4.0 layer4.1 layer4.2"),
    ("preact_resnet18", {},
     "conv1 layer1.0.conv1 layer1.0.conv2 layer1.1.conv1 layer1.1.conv2 layer2.0.conv1 layer2.0.conv2 "
     "layer2.0.shortcut.0 layer2.1.conv1 layer2.1.conv2 layer3.0.conv1 layer3.0.conv2 layer3.0.shortcut.0 "
     "layer3.1.conv1 layer3.1.conv2 layer4.0.conv1 layer4.0.conv2 layer4.0.shortcut.0 layer4.1.conv1 "
     "layer4.1.conv2",
     "layer1.0 layer1.1 layer2.0 layer2.1 layer3.0 layer3.1 layer4.0 layer4.1"),
    ("wide_resnet28_10", dict(depth=16, widen_factor=2),
     "conv1 block1.layer.0.conv1 block1.layer.0.conv2 block1.layer.0.convShortcut block1.layer.1.conv1 "
     "block1.layer.1.conv2 block2.layer.0.conv1 block2.layer.0.conv2 block2.layer.0.convShortcut "
     "block2.layer.1.conv1 block2.layer.1.conv2 block3.layer.0.conv1 block3.layer.0.conv2 "
     "block3.layer.0.convShortcut block3.layer.1.conv1 block3.layer.1.conv2",
     "block1.layer.0 block1.layer.1 block2.layer.0 block2.layer.1 block3.layer.0 block3.layer.1"),
]


def _wrapped(model: nn.Module) -> list[str]:
    """Names of the LoRA and adapter wrappers, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, (LoRALinear, LoRAConv2d, Adapted))]


@pytest.mark.parametrize(("arch", "options", "lora", "adapters"), TEST_CASES, ids=[c[0] for c in TEST_CASES])
def test_peft_layers_land_where_they_did_before(arch, options, lora, adapters):
    model = create_model(arch, **options)
    add_lora(model, rank=2, alpha=2.0)
    assert _wrapped(model) == lora.split()
    model = create_model(arch, **options)
    add_adapters(model, reduction=4)
    assert _wrapped(model) == adapters.split()


class _Attention(nn.Module):
    """Self-attention whose fused [q | k | v] projection is called ``in_proj`` (not timm's ``qkv``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        return self.out(F.scaled_dot_product_attention(*self.in_proj(x).chunk(3, dim=-1)))


class _Toy(ImageClassifier):
    """A model peft.py has never heard of: conv stem, attention over pixels as tokens, linear head."""

    def __init__(self, **peft_points) -> None:
        super().__init__(ModelCfg(classifier="head", input_size=(3, 4, 4), normalization="none", **peft_points))
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.attn = _Attention(6)
        self.head = nn.Linear(6, 2)

    def forward_features(self, x: Tensor) -> Tensor:
        """Mean token."""
        return self.attn(self.stem(self.normalize(x)).flatten(2).transpose(1, 2)).mean(dim=1)


def test_declared_points_of_an_unknown_model_are_honoured():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 4)
    model = _Toy(fused_qkv=(FusedQKV(_Attention, attr="in_proj"),),
                 adapter_points=(AdapterPoint(_Attention, channels=False),)).eval()
    before = model(x)
    (layer,) = add_lora(model, rank=2, alpha=2.0)
    assert _wrapped(model) == ["attn.in_proj"] and layer.slices == ((0, 6), (12, 18))
    (adapter,) = add_adapters(model, reduction=3)
    assert _wrapped(model) == ["attn", "attn.base_layer.in_proj"]
    assert isinstance(adapter.down, nn.Linear) and adapter.down.in_features == 6  # the attention's output width
    with torch.no_grad():
        assert torch.equal(model(x), before)  # both start as the identity


def test_a_model_declaring_nothing_gets_conv_lora_and_no_adapters():
    model = _Toy()
    add_lora(model, rank=2, alpha=2.0)
    assert _wrapped(model) == ["stem"]
    with pytest.raises(UserError, match=r"_Toy has no module of its ModelCfg.adapter_points \(none declared\)"):
        add_adapters(_Toy(), reduction=2)


def test_the_methods_layer_imports_no_architecture():
    tree = ast.parse(Path(peft.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("models")} == {"models.base"}


@pytest.mark.parametrize("first", ["robustft.models.swin", "robustft.models.registry", "robustft.methods.peft"])
def test_every_model_registers_whichever_module_is_imported_first(first):
    code = f"import {first}; from robustft.models import list_models; print(' '.join(list_models()))"
    env = {**os.environ, "PYTHONPATH": str(Path(robustft.__file__).parents[1])}  # this robustft, in a fresh process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert {"swin", "swin_base_patch4_window7_224", "vit", "cifar_resnet20", "preact_resnet18",
            "wide_resnet34_10"} <= set(out.split())
