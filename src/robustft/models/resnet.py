"""ResNets with torchvision's parameter names, for ImageNet (7x7 stem) and CIFAR (3x3 stem).

Layouts, so that published checkpoints load without key surgery:
- ``resnet18`` / ``resnet50`` / ``wide_resnet50_2``: torchvision ``resnet.py`` (He et al. 2016, v1.5 bottleneck with
  the stride on the 3x3 conv; Wide ResNet-50-2 doubles the bottleneck's inner width, torchvision's
  ``width_per_group=128``); MadryLab ``robustness`` ImageNet checkpoints and timm use the same names.
- ``cifar_resnet20/32/56``: He et al.'s 6n+2 CIFAR ResNets with torchvision names and a 1x1-conv+BN downsample
  (the layout of the reference adversarially trained checkpoint shipped with robustft's benchmarks).
- ``cifar_resnet18`` / ``cifar_resnet34``: kuangliu/pytorch-cifar ``ResNet18`` / ``ResNet34`` (projection named
  ``shortcut``, head named ``linear``), the networks of the RiFT and AutoAttack examples. ``img_size=64`` is RiFT's
  Tiny-ImageNet variant (``--input_size 64``): the head reads 2x2 pooled cells of the final map, 2048 features.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.base import AdapterPoint, ImageClassifier, ModelCfg, build_model
from robustft.models.layers import (cell_grid, check_head_cells, conv1x1, conv3x3, init_conv_bn, make_stage,
                                    pool_cells, projection)
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model

__all__ = ["BasicBlock", "KuangliuBasicBlock", "Bottleneck", "WideBottleneck", "ResNet"]


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the shortcut, then relu (torchvision names)."""

    expansion = 1
    shortcut_name = "downsample"  # torchvision's name for the projection shortcut

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        # Not in-place anywhere in robustft's models: forward hooks must see activations unmodified.
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.add_module(self.shortcut_name, projection(in_planes, planes, stride))

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + getattr(self, self.shortcut_name)(x))


class KuangliuBasicBlock(BasicBlock):
    """The same block as kuangliu/pytorch-cifar names it: the projection is called ``shortcut``."""

    shortcut_name = "shortcut"


class Bottleneck(nn.Module):
    """conv1x1-conv3x3(stride)-conv1x1 with 4x expansion, plus the ``downsample`` shortcut (torchvision v1.5)."""

    expansion = 4
    width_factor = 1  # inner (1x1 and 3x3) width = planes * width_factor

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes, width = planes * self.expansion, planes * self.width_factor
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.downsample = projection(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class WideBottleneck(Bottleneck):
    """The bottleneck of Wide ResNet-50-2: twice the inner width, same output width (torchvision names)."""

    width_factor = 2


class ResNet(ImageClassifier):
    """Stem, residual stages ``layer1..layerN`` (first at stride 1, the rest at stride 2), average pool, linear head.

    ``stem="imagenet"``: 7x7 stride-2 conv + 3x3 max-pool (224-px inputs); ``stem="cifar"``: one 3x3 stride-1 conv
    (32-px inputs). ``classifier`` names the head attribute (``fc`` for torchvision, ``linear`` for kuangliu).
    ``resize_input=S`` upsamples inputs to S x S (nearest) inside the model, as MadryLab
    robustness' ``AttackerModel`` enlarges CIFAR images for ImageNet ResNets: attacks then act on the small image.
    ``img_size`` (CIFAR stem, a multiple of 32, default 32): the head reads the final map average-pooled in
    (img_size/32)^2 cells, flattened, as kuangliu's fixed ``avg_pool2d(4)`` does at larger inputs (RiFT's 64-px
    Tiny-ImageNet nets); an ImageNet-stem ResNet pools globally at any input size.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck] = BasicBlock,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: str = "imagenet",
        classifier: str = "fc",
        resize_input: int | None = None,
        img_size: int | None = None,
        num_classes: int = 1000,
        normalization: NormSpec = None,
    ) -> None:
        if resize_input is not None and resize_input < 1:
            raise UserError(f"resize_input must be a positive image size, got {resize_input}")
        if stem not in ("imagenet", "cifar"):
            raise UserError(f"unknown ResNet stem {stem!r}: use 'imagenet' or 'cifar'")
        imagenet = stem == "imagenet"
        if imagenet and img_size not in (None, 224):
            raise UserError(f"img_size is an option of the CIFAR-stem ResNets (their head reads pooled cells); an "
                            f"ImageNet ResNet pools globally at any input size, got img_size {img_size}")
        size = img_size or (224 if imagenet else 32)
        grid = 1 if imagenet else cell_grid(size, 32, "ResNet")
        cfg = ModelCfg(
            classifier=classifier,
            input_size=(3, size, size),
            normalization="imagenet" if imagenet else "none",
            checkpoint_filter=check_head_cells,
            adapter_points=(AdapterPoint(block, channels=True),),
        )
        super().__init__(cfg, normalization)
        self.resize_input = resize_input
        self.grid = grid
        width = widths[0]
        if imagenet:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(3, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet else nn.Identity()
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        for i, (name, planes, depth) in enumerate(zip(self.stage_names, widths, layers, strict=True)):
            stage, width = make_stage(block, width, planes, depth, stride=1 if i == 0 else 2)
            self.add_module(name, stage)
        setattr(self, classifier, nn.Linear(width * self.grid**2, num_classes))
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features of images in [0, 1]."""
        x = self.normalize(x)
        if self.resize_input:
            # nearest upsampling copies pixels, so it commutes with the per-channel normalization exactly (and is the
            # identity on an input of that size); unconditional, so the attacks' BN-folding trace sees no branch
            x = F.interpolate(x, size=(self.resize_input, self.resize_input), mode="nearest")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return pool_cells(x, self.grid)


def _create_resnet(variant: str, **kwargs) -> ResNet:
    """Build a registered ResNet variant."""
    return build_model(ResNet, variant, **kwargs)


def _create_cifar_resnet(variant: str, depth: int, width: int, **kwargs) -> ResNet:
    """He et al.'s CIFAR ResNet-(6n+2): three stages of n BasicBlocks with widths w, 2w, 4w."""
    if (depth - 2) % 6:
        raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
    n = (depth - 2) // 6
    widths = (width, 2 * width, 4 * width)
    model_args = dict(block=BasicBlock, layers=(n, n, n), widths=widths, stem="cifar", num_classes=10)
    return _create_resnet(variant, **dict(model_args, **kwargs))


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18, torchvision layout (11.7M parameters with 1000 classes)."""
    return _create_resnet("resnet18", block=BasicBlock, layers=(2, 2, 2, 2), **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50, torchvision layout (25.6M parameters with 1000 classes); MadryLab robust weights load into it."""
    return _create_resnet("resnet50", block=Bottleneck, layers=(3, 4, 6, 3), **kwargs)


@register_model
def wide_resnet50_2(**kwargs) -> ResNet:
    """Wide ResNet-50-2, torchvision layout (68.9M parameters with 1000 classes); MadryLab robust weights load."""
    return _create_resnet("wide_resnet50_2", block=WideBottleneck, layers=(3, 4, 6, 3), **kwargs)


@register_model
def cifar_resnet18(**kwargs) -> ResNet:
    """ResNet-18 for 32-px inputs, kuangliu/pytorch-cifar layout (``shortcut``, ``linear``)."""
    model_args = dict(block=KuangliuBasicBlock, layers=(2, 2, 2, 2), stem="cifar", classifier="linear", num_classes=10)
    return _create_resnet("cifar_resnet18", **dict(model_args, **kwargs))


@register_model
def cifar_resnet34(**kwargs) -> ResNet:
    """ResNet-34 for 32-px inputs, kuangliu/pytorch-cifar layout (``shortcut``, ``linear``; RiFT's ResNet34)."""
    model_args = dict(block=KuangliuBasicBlock, layers=(3, 4, 6, 3), stem="cifar", classifier="linear", num_classes=10)
    return _create_resnet("cifar_resnet34", **dict(model_args, **kwargs))


@register_model
def cifar_resnet20(width: int = 16, **kwargs) -> ResNet:
    """CIFAR ResNet-20 (0.27M parameters at width 16)."""
    return _create_cifar_resnet("cifar_resnet20", depth=20, width=width, **kwargs)


@register_model
def cifar_resnet32(width: int = 16, **kwargs) -> ResNet:
    """CIFAR ResNet-32."""
    return _create_cifar_resnet("cifar_resnet32", depth=32, width=width, **kwargs)


@register_model
def cifar_resnet56(width: int = 16, **kwargs) -> ResNet:
    """CIFAR ResNet-56."""
    return _create_cifar_resnet("cifar_resnet56", depth=56, width=width, **kwargs)
