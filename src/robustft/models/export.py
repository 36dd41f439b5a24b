"""Exports for timm users: state dicts in timm 1.x names, and the ``config.json`` of a timm/HF hub model directory.

robustft shares six architectures with timm, built by the same constructor arguments: ``resnet18``, ``resnet50``,
``wide_resnet50_2`` (timm names = torchvision's), ``vit_small_patch16_224`` / ``vit_base_patch16_224`` and
``swin_base_patch4_window7_224``; the tiny ``vit`` and ``swin`` are timm's VisionTransformer / SwinTransformer at
other sizes (``model_args`` in ``config.json``). Only Swin's names differ: robustft keeps timm < 0.9's (those of
the ARES / RobustBench Swin files), and timm >= 0.9 (timm ``swin_transformer.py``) puts each patch merging at the
start of the next stage (``layers.<i+1>.downsample``), names the head ``head.fc`` and keeps the relative position
indices and shift masks as non-persistent buffers, so a strict load refuses them in a state dict.
"""

from typing import Any

from torch import Tensor

from robustft.models.base import ImageClassifier
from robustft.models.resnet import ResNet
from robustft.models.swin import SwinTransformer, to_timm_fn
from robustft.models.vision_transformer import VisionTransformer

__all__ = ["TIMM_ARCHITECTURES", "timm_state_dict", "timm_config"]

# robustft architecture -> timm model name; a tiny variant names the timm model whose class it is.
TIMM_ARCHITECTURES = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "wide_resnet50_2": "wide_resnet50_2",
    "vit": "vit_base_patch16_224",
    "vit_small_patch16_224": "vit_small_patch16_224",
    "vit_base_patch16_224": "vit_base_patch16_224",
    "swin": "swin_base_patch4_window7_224",
    "swin_base_patch4_window7_224": "swin_base_patch4_window7_224",
}


def timm_state_dict(state: dict[str, Tensor], model: ImageClassifier) -> dict[str, Tensor]:
    """``state`` (``model``'s keys, without ``normalize.*``) in timm 1.x names: what ``load_state_dict(strict=True)``
    of the timm model takes. Only Swin is renamed; every other architecture already uses timm's names."""
    return to_timm_fn(state) if isinstance(model, SwinTransformer) else dict(state)


def _model_args(model: ImageClassifier) -> dict[str, Any]:
    """timm constructor arguments that rebuild ``model``'s network (read from the model, so options count too)."""
    if isinstance(model, VisionTransformer):
        block = model.blocks[0]
        return dict(img_size=model.pretrained_cfg.input_size[1], patch_size=model.patch_embed.proj.kernel_size[0],
                    embed_dim=model.cls_token.shape[-1], depth=len(model.blocks), num_heads=block.attn.num_heads,
                    mlp_ratio=block.mlp.fc1.out_features / block.mlp.fc1.in_features)
    if isinstance(model, SwinTransformer):
        first = model.layers[0].blocks[0]
        return dict(img_size=model.img_size, patch_size=model.patch_embed.proj.kernel_size[0],
                    embed_dim=model.patch_embed.proj.out_channels, depths=[len(s.blocks) for s in model.layers],
                    num_heads=[s.blocks[0].attn.num_heads for s in model.layers], window_size=first.attn.window,
                    mlp_ratio=first.mlp.fc1.out_features / first.mlp.fc1.in_features)
    return {}


def _first_conv_and_classifier(model: ImageClassifier) -> tuple[str, str]:
    """timm's ``pretrained_cfg.first_conv`` / ``classifier`` names for ``model``."""
    if isinstance(model, ResNet):
        return "conv1", model.pretrained_cfg.classifier
    return "patch_embed.proj", "head.fc" if isinstance(model, SwinTransformer) else "head"


def timm_config(model: ImageClassifier, classes: list[str], mean: list[float], std: list[float],
                image_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """A ``config.json`` as timm's ``save_config_for_hf`` writes it: ``architecture``, ``num_classes``,
    ``num_features``, ``label_names``, ``model_args`` where the timm default differs, and ``pretrained_cfg`` with the
    preprocessing robustft evaluated with (images resized to ``image_size``, whole image, normalized by mean/std).

    timm's ``create_model("local-dir:DIR")`` / ``"hf-hub:REPO"`` builds from it; ``robustft.load_model`` reads it.
    A robustft-only architecture keeps its robustft name (robustft reads it, timm does not build it)."""
    arch = model.pretrained_cfg.architecture
    height, width = image_size or model.pretrained_cfg.input_size[1:]
    first_conv, classifier = _first_conv_and_classifier(model)
    config: dict[str, Any] = {
        "architecture": TIMM_ARCHITECTURES.get(arch, arch),
        "num_classes": len(classes),
        "num_features": model.get_classifier().in_features,
        "label_names": list(classes),
    }
    if model_args := _model_args(model):
        config["model_args"] = model_args
    config["pretrained_cfg"] = {
        "input_size": [3, height, width], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
        "mean": list(mean), "std": list(std), "num_classes": len(classes), "first_conv": first_conv,
        "classifier": classifier,
    }
    return config
