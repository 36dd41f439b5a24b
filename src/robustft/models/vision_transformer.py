"""Vision Transformer (Dosovitskiy et al. 2021) with timm's parameter names.

Names match timm ``vision_transformer.py`` (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``; class-token pooling,
LayerNorm eps 1e-6, qkv bias), so timm ViT checkpoints such as robust ViT-S/B weights load without renaming.
``vit`` is a tiny 32-px variant that trains on a CPU.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.base import AdapterPoint, FusedQKV, ImageClassifier, ModelCfg, build_model
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model

__all__ = ["PatchEmbed", "Attention", "Mlp", "Block", "VisionTransformer"]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> tokens, via a strided conv ``proj``."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise UserError(f"ViT img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] -> [B, N, D]."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise UserError(f"ViT embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """fc1-GELU-fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D]."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(ImageClassifier):
    """Patch embedding + class token + learned position embedding, ``depth`` blocks, final norm, class-token head."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        normalization: NormSpec = None,
    ) -> None:
        cfg = ModelCfg(classifier="head", input_size=(3, img_size, img_size), normalization="imagenet",
                       fused_qkv=(FusedQKV(Attention),), adapter_points=(AdapterPoint(Mlp, channels=False),))
        super().__init__(cfg, normalization)
        self.patch_embed = PatchEmbed(img_size, patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's default scheme: truncated normal (std 0.02) for embeddings and linear weights, zero biases."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Final-norm class token of images in [0, 1]."""
        x = self.patch_embed(self.normalize(x))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


def _create_vision_transformer(variant: str, **kwargs) -> VisionTransformer:
    """Build a registered VisionTransformer variant."""
    return build_model(VisionTransformer, variant, **kwargs)


@register_model
def vit(**kwargs) -> VisionTransformer:
    """Tiny ViT for 32-px inputs: 4-px patches, dim 192, depth 6, 3 heads (2.7M parameters); CPU-friendly."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3, num_classes=10)
    return _create_vision_transformer("vit", **dict(model_args, **kwargs))


@register_model
def vit_small_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-S/16 at 224 px (22M parameters), timm ``vit_small_patch16_224``."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_vision_transformer("vit_small_patch16_224", **dict(model_args, **kwargs))


@register_model
def vit_base_patch16_224(**kwargs) -> VisionTransformer:
    """ViT-B/16 at 224 px (86M parameters), timm ``vit_base_patch16_224``."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return _create_vision_transformer("vit_base_patch16_224", **dict(model_args, **kwargs))
