"""Swin Transformer: timm names and size, window/shift/mask semantics, and timm/ARES checkpoint layouts."""

import re

import pytest
import torch
import torch.nn.functional as F

from robustft.errors import UserError
from robustft.models import (
    create_model,
    from_timm_layout,
    load_checkpoint,
    load_state_dict_into,
    read_timm_checkpoint,
    save_state_dict,
)
from robustft.models.swin import SwinBlock, window_partition, window_reverse


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_model("swin", num_classes=5).eval()


def test_forward_backward_and_shapes(tiny):
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    out = tiny(x)
    assert out.shape == (3, 5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in tiny.parameters())
    assert tiny.forward_features(x).shape == (3, 64)


def test_timm_key_names(tiny):
    keys = set(tiny.state_dict())
    expected = {  # timm < 0.9 / Microsoft Swin names (the ARES robust checkpoints' layout)
        "patch_embed.proj.weight", "patch_embed.norm.weight", "layers.0.blocks.0.norm1.weight",
        "layers.0.blocks.0.attn.relative_position_bias_table", "layers.0.blocks.0.attn.relative_position_index",
        "layers.0.blocks.0.attn.qkv.weight", "layers.0.blocks.0.attn.qkv.bias", "layers.0.blocks.0.attn.proj.weight",
        "layers.0.blocks.0.norm2.bias", "layers.0.blocks.0.mlp.fc1.weight", "layers.0.blocks.0.mlp.fc2.bias",
        "layers.0.blocks.1.attn_mask", "layers.0.downsample.norm.weight", "layers.0.downsample.reduction.weight",
        "layers.1.downsample.reduction.weight", "norm.weight", "head.weight", "head.bias"}
    assert expected <= keys
    assert "layers.0.downsample.reduction.bias" not in keys, "patch merging has no bias"
    assert not any(k.startswith("layers.2.downsample") for k in keys), "the last stage does not merge"
    # shift masks only where the map is larger than a window: stages 0 and 1 (16 and 8 px), not stage 2 (4 px)
    masks = {k for k in keys if k.endswith("attn_mask")}
    assert masks == {"layers.0.blocks.1.attn_mask", "layers.1.blocks.1.attn_mask"}
    assert tiny.pretrained_cfg.classifier == "head" and tiny.get_classifier() is tiny.head


def test_swin_base_parameter_count_matches_timm():
    with torch.device("meta"):  # no allocation: only the structure is counted
        model = create_model("swin_base_patch4_window7_224")
    assert sum(p.numel() for p in model.parameters()) == 87_768_224  # timm swin_base_patch4_window7_224
    assert model.layers[3].blocks[0].window == 7 and model.layers[3].blocks[1].shift == 0  # 7x7 map: one window


def _reference_block_attention(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The reference's attention branch written out: roll, partition, q·kᵀ·scale + bias + mask, softmax, reverse."""
    (h, w), (b, _, c), attn = block.resolution, x.shape, block.attn
    y = torch.roll(block.norm1(x).view(b, h, w, c), (-block.shift, -block.shift), (1, 2))
    win = window_partition(y, block.window)
    bw, n, _ = win.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(win).reshape(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    logits = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
    logits = logits + bias.unsqueeze(0)
    nw = block.attn_mask.shape[0]
    logits = (logits.view(bw // nw, nw, heads, n, n) + block.attn_mask[None, :, None]).view(bw, heads, n, n)
    out = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))
    return torch.roll(window_reverse(out, block.window, h, w), (block.shift, block.shift), (1, 2)).reshape(b, h * w, c)


def test_shifted_window_attention_matches_reference_math(tiny):
    block = tiny.layers[0].blocks[1]
    assert block.shift == 2 and block.window == 4
    x = torch.randn(2, 256, 16)
    with torch.no_grad():
        expected = x + _reference_block_attention(block, x)
        expected = expected + block.mlp(block.norm2(expected))
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_shifted_window_only_mixes_tokens_of_one_region(tiny):
    """After a cyclic shift by s, windows are row/column intervals cut at s, s+w, s+2w, ...; the mask keeps the
    wrapped window's two halves apart. A token change must reach exactly the tokens of its own region."""
    block = tiny.layers[0].blocks[1]
    h, s, w = 16, block.shift, block.window
    cuts = torch.tensor([s + i * w for i in range(h // w)])

    def region(i: int) -> int:
        return int((cuts <= i).sum())

    x = torch.randn(1, h * h, 16)
    for r, c in [(0, 0), (1, 15), (5, 6), (15, 2)]:
        x2 = x.clone()
        x2[0, r * h + c, 0] += 1.0  # one feature: a shift of all of them would vanish in LayerNorm
        with torch.no_grad():
            # the reference's -100 mask leaves up to e^-100 of cross-region attention: "changed" means > 1e-6
            changed = (block(x2) - block(x)).abs().sum(-1)[0].view(h, h) > 1e-6
        expected = torch.tensor([[region(i) == region(r) and region(j) == region(c) for j in range(h)]
                                 for i in range(h)])
        assert torch.equal(changed, expected), (r, c)


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    model = create_model("swin", num_classes=3, drop_path_rate=0.5)
    x = torch.rand(8, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, model(x))


def test_resize_input_upsamples_inside_the_model():
    """RoLI's CIFAR protocol: 32-px images (attacked at 32 px) enlarged bilinearly by the model's first layer."""
    torch.manual_seed(0)
    model = create_model("swin", num_classes=3, img_size=64, resize_input=True).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model(F.interpolate(x, size=64, mode="bilinear", align_corners=False)),
                              atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# checkpoint layouts
# ---------------------------------------------------------------------------------------------------------------
def _timm09(state: dict) -> dict:
    """What timm >= 0.9's checkpoint_filter_fn makes of an old-layout Swin state dict (and what its models save)."""
    out = {}
    for k, v in state.items():
        if k.endswith(("relative_position_index", "attn_mask")):
            continue  # non-persistent buffers there
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k)
        out[k.replace("head.", "head.fc.")] = v
    return out


def _network(state: dict) -> dict:
    """A plain timm state dict: no normalizer."""
    return {k: v for k, v in state.items() if not k.startswith("normalize.")}


ARES_MEAN, ARES_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

LAYOUTS = {
    # ARES 2.0 release files: the timm model's own state dict
    "timm_plain": lambda sd: _network(sd),
    "timm_plain_no_buffers": lambda sd: {k: v for k, v in _network(sd).items()
                                         if not k.endswith(("relative_position_index", "attn_mask"))},
    "timm09": lambda sd: _timm09(_network(sd)),
    # ARES ImageNetCLS(normalize=True): model = Sequential(NormalizeByChannelMeanStd, timm model)
    "ares_wrapper": lambda sd: {"model.0.mean": ARES_MEAN, "model.0.std": ARES_STD,
                                **{f"model.1.{k}": v for k, v in _network(sd).items()}},
    # RobustBench normalize_model(timm model): normalize.{mean,std} [1,3,1,1] + model.*
    "robustbench": lambda sd: {"normalize.mean": ARES_MEAN.view(1, 3, 1, 1), "normalize.std": ARES_STD.view(1, 3, 1, 1),
                               **{f"model.{k}": v for k, v in _network(sd).items()}},
    # timm CheckpointSaver-style nesting with a DDP prefix, timm >= 0.9 names
    "timm09_ddp_nested": lambda sd: {"epoch": 3,
                                     "state_dict": {f"module.{k}": v for k, v in _timm09(_network(sd)).items()}},
}


SWIN_ONLY = ("timm_plain_no_buffers", "timm09", "timm09_ddp_nested")


@pytest.mark.parametrize(("arch", "layout"), [("swin", name) for name in LAYOUTS]
                         + [("vit", name) for name in LAYOUTS if name not in SWIN_ONLY])
def test_timm_and_ares_layouts_map_and_load_strictly(arch, layout, tmp_path):
    options = dict(depth=2, embed_dim=48, num_heads=3) if arch == "vit" else {}
    torch.manual_seed(0)
    source = create_model(arch, num_classes=5, normalization="imagenet", **options).eval()
    path = tmp_path / "ckpt.pt"
    torch.save(LAYOUTS[layout](source.state_dict()), path)
    torch.manual_seed(1)
    target = create_model(arch, num_classes=5, normalization="none", **options).eval()
    state = read_timm_checkpoint(str(path), target)
    load_state_dict_into(target, state)  # strict
    if layout in ("ares_wrapper", "robustbench"):
        assert torch.allclose(target.normalize.mean.flatten(), ARES_MEAN)
    else:
        target.normalize.load_state_dict(source.normalize.state_dict())  # a bare timm file carries no statistics
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_timm09_downsample_moves_one_stage_back(tiny):
    state = from_timm_layout(_timm09(tiny.state_dict()), tiny)
    assert torch.equal(state["layers.0.downsample.reduction.weight"], tiny.layers[0].downsample.reduction.weight)
    assert torch.equal(state["head.weight"], tiny.head.weight)


def test_robustft_checkpoint_passes_through_and_plain_file_loads_without_mapping(tiny, tmp_path):
    assert from_timm_layout(tiny.state_dict(), tiny).keys() == tiny.state_dict().keys()
    path = tmp_path / "plain.pt"
    torch.save(_network(tiny.state_dict()), path)  # an ARES-style file: the engine's plain loader takes it as is
    loaded = load_checkpoint("swin", path, normalization="imagenet").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny(x))
    save_state_dict(tiny, tmp_path / "ours.pt")
    assert load_checkpoint("swin", tmp_path / "ours.pt").head.out_features == 5


def test_mismatched_window_buffers_are_refused(tiny):
    other = create_model("swin", num_classes=5, window_size=8)
    with pytest.raises(UserError, match="window"):
        from_timm_layout(tiny.state_dict(), other)
