"""Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks") for 32-px inputs.

Parameter names follow kuangliu/pytorch-cifar ``models/preact_resnet.py`` (``conv1``, ``layer1..4`` of
``bn1, conv1, bn2, conv2, shortcut.0``, ``linear``). The robust-training code built on it (Rice et al. 2020
robust_overfitting, Wong et al. 2020 fast_adversarial) adds a final ``bn`` + ReLU before pooling; that is the
default here, and ``final_bn=False`` gives kuangliu's original.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.models.base import AdapterPoint, ImageClassifier, ModelCfg, build_model
from robustft.models.layers import conv3x3, init_conv_bn, make_stage, projection
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model

__all__ = ["PreActBlock", "PreActResNet"]


class PreActBlock(nn.Module):
    """bn-relu-conv3x3-bn-relu-conv3x3 plus the shortcut (a bare 1x1 conv when the shape changes)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = projection(in_planes, planes, stride, norm=False)

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        out = F.relu(self.bn1(x))
        # As in the reference: a projection sees the pre-activated input, the identity the raw one.
        shortcut = self.shortcut(out) if len(self.shortcut) else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(ImageClassifier):
    """3x3 stem conv, four pre-activation stages (64-512 channels), optional final bn-relu, average pool, ``linear``."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        final_bn: bool = True,
        num_classes: int = 10,
        normalization: NormSpec = None,
    ) -> None:
        cfg = ModelCfg(classifier="linear", input_size=(3, 32, 32), normalization="none",
                       adapter_points=(AdapterPoint(PreActBlock, channels=True),))
        super().__init__(cfg, normalization)
        self.conv1 = conv3x3(3, 64)
        width = 64
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        for i, (name, depth) in enumerate(zip(self.stage_names, layers, strict=True)):
            stage, width = make_stage(PreActBlock, width, 64 * 2**i, depth, stride=1 if i == 0 else 2)
            self.add_module(name, stage)
        self.bn = nn.BatchNorm2d(width) if final_bn else None
        self.linear = nn.Linear(width, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features of images in [0, 1]."""
        x = self.conv1(self.normalize(x))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.bn is not None:
            x = F.relu(self.bn(x))
        return x.mean(dim=(2, 3))


def _create_preact_resnet(variant: str, **kwargs) -> PreActResNet:
    """Build a registered PreActResNet variant."""
    return build_model(PreActResNet, variant, **kwargs)


@register_model
def preact_resnet18(**kwargs) -> PreActResNet:
    """PreActResNet-18 for 32-px inputs (11.2M parameters with 10 classes)."""
    return _create_preact_resnet("preact_resnet18", layers=(2, 2, 2, 2), **kwargs)
