"""Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings in Deep Residual Networks") for 32-px inputs.

Parameter names follow kuangliu/pytorch-cifar ``models/preact_resnet.py`` (``conv1``, ``layer1..4`` of
``bn1, conv1, bn2, conv2, shortcut.0``, optional final ``bn``, ``linear``). RobustBench's
``model_zoo/architectures/resnet.py`` uses the same names for two variants that differ only in what a projection
shortcut sees, so their checkpoints have identical keys (checked at kuangliu/pytorch-cifar 010536e and
RobustBench/robustbench 78fcc9e, ``model_zoo/cifar10.py`` / ``cifar100.py``):

- ``projection_input="activated"``: ``shortcut(relu(bn1(x)))`` — kuangliu, RobustBench ``PreActBlockV2``
  (Rice2020Overfitting L2, Kireev2021Effectiveness), robustft's own models.
- ``projection_input="raw"``: ``shortcut(x)`` — RobustBench's default ``PreActBlock`` (Wong2020Fast,
  Andriushchenko2020Understanding, CIFAR-100 Rice2020Overfitting).

``final_bn`` adds a final ``bn`` + ReLU before pooling (RobustBench ``bn_before_fc``: the Rice2020Overfitting and
Kireev2021Effectiveness models have it; kuangliu, Wong2020Fast and Andriushchenko2020Understanding do not).
Whether a checkpoint has it shows in its keys; which projection input it was trained with does not, so loading
one (``load_checkpoint``) needs ``projection_input`` stated. A fresh model built without it is ``activated``.
"""

from typing import Literal, get_args

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.base import AdapterPoint, ImageClassifier, ModelCfg, build_model
from robustft.models.layers import conv3x3, init_conv_bn, make_stage, projection
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model

__all__ = ["PreActBlock", "RawProjectionPreActBlock", "PreActResNet", "ProjectionInput"]

ProjectionInput = Literal["activated", "raw"]


class PreActBlock(nn.Module):
    """bn-relu-conv3x3-bn-relu-conv3x3 plus the shortcut (a bare 1x1 conv on relu(bn1(x)) when the shape changes)."""

    expansion = 1
    raw_projection_input = False  # the projection sees the pre-activated input (RobustBench PreActBlockV2)

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
        if not len(self.shortcut):
            shortcut = x  # the identity always carries the raw input
        else:
            shortcut = self.shortcut(x if self.raw_projection_input else out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class RawProjectionPreActBlock(PreActBlock):
    """RobustBench's default ``PreActBlock``: the projection shortcut sees the raw block input ``x``."""

    raw_projection_input = True


class PreActResNet(ImageClassifier):
    """3x3 stem conv, four pre-activation stages (64-512 channels), optional final bn-relu, average pool, ``linear``.

    ``projection_input=None`` builds the ``activated`` variant and records that it was not stated, so that a
    checkpoint, whose keys cannot tell the variants apart, is refused until it is (``checkpoint_filter``).
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        final_bn: bool = True,
        projection_input: ProjectionInput | None = None,
        num_classes: int = 10,
        normalization: NormSpec = None,
    ) -> None:
        if projection_input not in (None, *get_args(ProjectionInput)):
            raise UserError(f"PreActResNet projection_input must be one of {', '.join(get_args(ProjectionInput))}, "
                            f"got {projection_input!r}")
        cfg = ModelCfg(classifier="linear", input_size=(3, 32, 32), normalization="none",
                       checkpoint_filter=_check_variant, adapter_points=(AdapterPoint(PreActBlock, channels=True),))
        super().__init__(cfg, normalization)
        self.projection_input = projection_input
        block = RawProjectionPreActBlock if projection_input == "raw" else PreActBlock
        self.conv1 = conv3x3(3, 64)
        width = 64
        self.stage_names = tuple(f"layer{i + 1}" for i in range(len(layers)))
        for i, (name, depth) in enumerate(zip(self.stage_names, layers, strict=True)):
            stage, width = make_stage(block, width, 64 * 2**i, depth, stride=1 if i == 0 else 2)
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


# Who trained with which projection input (module docstring), for the message that asks which one a checkpoint is.
_VARIANTS = ("projection_input=raw (RobustBench's default PreActBlock: Wong2020Fast, Andriushchenko2020Understanding, "
             "CIFAR-100 Rice2020Overfitting) or projection_input=activated (kuangliu; RobustBench PreActBlockV2: "
             "Rice2020Overfitting L2, Kireev2021Effectiveness; robustft)")


def _check_variant(state: dict[str, Tensor], model: PreActResNet) -> dict[str, Tensor]:
    """Refuse, naming the model option to set, a checkpoint of a variant that ``model`` was not built or told for."""
    bn = "bn.weight" in state
    bn_option = "" if bn == (model.bn is not None) else f"final_bn={str(bn).lower()}"
    where = ("(--model-arg KEY=VALUE for evaluate/mrc, model.options in a run config, keyword arguments of "
             "robustft.load_model)")
    name = model.pretrained_cfg.architecture or "PreActResNet"
    if model.projection_input is None and any(".shortcut." in k for k in state):
        also = f", and {bn_option}" if bn_option else ""
        raise UserError(f"{name} checkpoint: its keys fit two variants that compute different logits; say which "
                        f"with the model option {_VARIANTS}{also} {where}")
    if bn_option:
        raise UserError(f"{name} checkpoint {'has' if bn else 'has no'} final `bn` before pooling: set the model "
                        f"option {bn_option} {where}")
    return state


def _create_preact_resnet(variant: str, **kwargs) -> PreActResNet:
    """Build a registered PreActResNet variant."""
    return build_model(PreActResNet, variant, **kwargs)


@register_model
def preact_resnet18(**kwargs) -> PreActResNet:
    """PreActResNet-18 for 32-px inputs (11.2M parameters with 10 classes)."""
    return _create_preact_resnet("preact_resnet18", layers=(2, 2, 2, 2), **kwargs)
