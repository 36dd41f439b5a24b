"""Swin Transformer (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted Windows") with timm's names.

Names and layout follow timm before 0.9 (``swin_transformer.py``), which are also Microsoft's original names and the
layout of the ARES 2.0 robust Swin checkpoints (RoLI loads them into Microsoft's Swin, whose stage-end downsample
differs from timm >= 0.9's): ``patch_embed.{proj, norm}``, ``layers.<i>.blocks.<j>.{norm1,
attn.{relative_position_bias_table, relative_position_index, qkv, proj}, norm2, mlp.{fc1, fc2}, attn_mask}``,
``layers.<i>.downsample.{norm, reduction}`` at the *end* of stages 0..n-2, then ``norm`` and a linear ``head`` over
mean-pooled tokens. ``relative_position_index`` and ``attn_mask`` are persistent buffers, as there, so such
checkpoints load strictly as they are. ``checkpoint_filter_fn`` (the model's ``ModelCfg.checkpoint_filter``) maps
timm >= 0.9 checkpoints onto this layout, inverting timm's ``swin_transformer.checkpoint_filter_fn`` renaming
(downsample at the start of stages 1..n-1, ``head.fc``, no buffers), and fills missing buffers from the model (they
are constants); ``robustft.models.checkpoint`` unwraps ARES/RobustBench files before it runs. ``to_timm_fn`` is its
inverse, for exports that strict-load into timm >= 0.9 (``robustft.models.export``).
``swin`` is a tiny 32-px variant that trains on a CPU.
"""

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.base import AdapterPoint, FusedQKV, ImageClassifier, ModelCfg, build_model
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model
from robustft.models.vision_transformer import Mlp

__all__ = ["DropPath", "WindowAttention", "SwinBlock", "PatchMerging", "SwinStage", "SwinTransformer",
           "window_partition", "window_reverse", "checkpoint_filter_fn", "to_timm_fn"]


def window_partition(x: Tensor, window: int) -> Tensor:
    """[B, H, W, C] -> [B * H/window * W/window, window * window, C] (windows in row-major order per image)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of ``window_partition``: [B * nW, window * window, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(window: int) -> Tensor:
    """[N, N] index into the ((2w-1)^2)-row bias table for every (query, key) pair of a window (N = w^2)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # [N, N, 2], each in [0, 2w-2]
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> Tensor:
    """[nW, N, N] additive mask (0 or -100, as in the reference) that keeps a shifted window's tokens from attending
    across the seams where the cyclic shift put originally distant regions side by side."""
    region = torch.zeros(1, h, w, 1)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(bounds):
        for j, ws in enumerate(bounds):
            region[:, hs, ws, :] = i * len(bounds) + j
    ids = window_partition(region, window).squeeze(-1)  # [nW, N]
    diff = ids[:, None, :] - ids[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's whole residual branch with probability ``p`` (rescaled)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        """Identity in eval mode."""
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        """Show the rate in ``print(model)``."""
        return f"p={self.p}"


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows: fused ``qkv`` projection, learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise UserError(f"Swin stage width {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B * nW, N, C] -> [B * nW, N, C]; ``mask`` [nW, N, N] is added to the logits of every image's windows."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # [1, heads, N, N]
        if mask is not None:
            windows = mask.shape[0]
            bias = (bias.unsqueeze(0) + mask.to(q.dtype)[None, :, None]).view(1, windows, self.num_heads, n, n)
            q, k, v = (t.reshape(bw // windows, windows, self.num_heads, n, -1) for t in (q, k, v))
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[0])
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm block: x + (shifted) window attention, then x + MLP; stochastic depth on both branches."""

    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.resolution = resolution
        if min(resolution) <= window:  # the whole map fits in one window: no partition, no shift (as the reference)
            window, shift = min(resolution), 0
        if resolution[0] % window or resolution[1] % window:
            raise UserError(f"Swin feature map {resolution} is not a multiple of the window size {window}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # None registers nothing, so unshifted blocks have no attn_mask key, exactly like the reference checkpoints
        self.register_buffer("attn_mask", shifted_window_mask(*resolution, window, shift) if shift else None)

    def forward(self, x: Tensor) -> Tensor:
        """[B, H*W, C] -> [B, H*W, C]."""
        (h, w), (b, _, c) = self.resolution, x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), self.attn_mask), self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C), normalized, and projected to 2C: halves the resolution."""

    def __init__(self, dim: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        if resolution[0] % 2 or resolution[1] % 2:
            raise UserError(f"Swin patch merging needs an even feature map, got {resolution}")
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """[B, H*W, C] -> [B, H/2*W/2, 2C], concatenating in the reference order (0,0), (1,0), (0,1), (1,1)."""
        (h, w), (b, _, c) = self.resolution, x.shape
        x = x.view(b, h, w, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating plain and shifted windows, then an optional patch merging (timm's BasicLayer)."""

    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 mlp_ratio: float, drop_path: list[float], downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, drop_path[i])
            for i in range(depth)))
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        """Blocks, then merging."""
        x = self.blocks(x)
        return x if self.downsample is None else self.downsample(x)


class SwinPatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens (strided conv ``proj``), then LayerNorm ``norm``."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise UserError(f"Swin img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.grid = (img_size // patch_size, img_size // patch_size)
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, N, D]."""
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(ImageClassifier):
    """Patch embedding, stages of window-attention blocks at halving resolution and doubling width, final norm, mean
    pooling over tokens, linear ``head``. ``drop_path_rate`` rises linearly over all blocks (timm's rule).

    ``resize_input`` upsamples inputs of any size bilinearly to ``img_size`` inside the model (RoLI's CIFAR protocol:
    32-px images, attacked at 32 px, enlarged by the model's first layer). Without it inputs must be ``img_size``.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        resize_input: bool = False,
        num_classes: int = 1000,
        normalization: NormSpec = None,
    ) -> None:
        cfg = ModelCfg(classifier="head", input_size=(3, img_size, img_size), normalization="imagenet",
                       checkpoint_filter=checkpoint_filter_fn, fused_qkv=(FusedQKV(WindowAttention),),
                       adapter_points=(AdapterPoint(Mlp, channels=False),))
        super().__init__(cfg, normalization)
        self.img_size, self.resize_input = img_size, resize_input
        if len(depths) != len(num_heads):
            raise UserError(f"Swin depths {depths} and num_heads {num_heads} must have the same length")
        self.patch_embed = SwinPatchEmbed(img_size, patch_size, embed_dim)
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # torch.linspace's values, in Python
        (h, w), stages = self.patch_embed.grid, []
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            last = i == len(depths) - 1
            stages.append(SwinStage(embed_dim * 2**i, (h // 2**i, w // 2**i), depth, heads, window_size, mlp_ratio,
                                    rates[sum(depths[:i]):sum(depths[:i + 1])], downsample=not last))
        self.layers = nn.Sequential(*stages)
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's scheme: truncated normal (std 0.02) for linear weights and the bias tables, zero linear biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def forward_features(self, x: Tensor) -> Tensor:
        """Mean of the final-norm tokens of images in [0, 1]."""
        x = self.normalize(x)
        if self.resize_input and x.shape[-2:] != (self.img_size, self.img_size):
            # per-channel normalization commutes with bilinear interpolation: same as resizing the [0,1] image first
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return self.norm(self.layers(self.patch_embed(x))).mean(dim=1)


def _from_timm09(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm >= 0.9 Swin names -> the timm < 0.9 / Microsoft names our Swin uses."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", k)
        out[k.replace("head.fc.", "head.", 1) if k.startswith("head.fc.") else k] = v
    return out


def to_timm_fn(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """This layout -> timm >= 0.9's: merging moved to the next stage, ``head.fc``, constant buffers dropped (timm keeps
    them non-persistent). The inverse of ``_from_timm09`` (timm's own ``checkpoint_filter_fn`` renaming)."""
    out = {}
    for k, v in state.items():
        if k.endswith((".relative_position_index", ".attn_mask")):
            continue
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
        out[k.replace("head.", "head.fc.", 1) if k.startswith("head.") else k] = v
    return out


def _constant_buffers(model: SwinTransformer) -> dict[str, Tensor]:
    """The constant buffers every Swin checkpoint may or may not carry: relative position indices, shift masks."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, WindowAttention):
            out[f"{name}.relative_position_index"] = m.relative_position_index
        elif isinstance(m, SwinBlock) and m.attn_mask is not None:
            out[f"{name}.attn_mask"] = m.attn_mask
    return out


def checkpoint_filter_fn(state: dict[str, Tensor], model: SwinTransformer) -> dict[str, Tensor]:
    """A timm (< 0.9 or >= 0.9) or robustft Swin state dict in this model's layout, with this model's buffers."""
    if "head.fc.weight" in state or (any(k.startswith("layers.1.downsample.") for k in state)
                                     and not any(k.startswith("layers.0.downsample.") for k in state)):
        state = _from_timm09(state)
    buffers = _constant_buffers(model)
    stray = sorted(k for k in state if k.endswith((".relative_position_index", ".attn_mask")) and k not in buffers)
    if stray:
        raise UserError(f"checkpoint Swin buffers do not fit this model's windows: {', '.join(stray[:4])}")
    for k, v in buffers.items():
        if k in state and not torch.equal(state[k].to(v.device, v.dtype), v):
            raise UserError(f"checkpoint buffer {k} differs from this Swin's: window size or image size differ")
        state[k] = v.detach().clone()
    return state


def _create_swin(variant: str, **kwargs) -> SwinTransformer:
    """Build a registered SwinTransformer variant."""
    return build_model(SwinTransformer, variant, **kwargs)


@register_model
def swin(**kwargs) -> SwinTransformer:
    """Tiny Swin for 32-px inputs: 2-px patches, widths 16/32/64, one block pair per stage, window 4 (CPU-friendly)."""
    model_args = dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4,
                      num_classes=10)
    return _create_swin("swin", **dict(model_args, **kwargs))


@register_model
def swin_base_patch4_window7_224(**kwargs) -> SwinTransformer:
    """Swin-B at 224 px (87.8M parameters with 1000 classes), timm ``swin_base_patch4_window7_224``; the robust
    ARES 2.0 Swin-B (ImageNet L∞ 4/255 AT) that RoLI fine-tunes loads into it."""
    model_args = dict(img_size=224, patch_size=4, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                      window_size=7)
    return _create_swin("swin_base_patch4_window7_224", **dict(model_args, **kwargs))
