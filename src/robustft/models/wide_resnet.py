"""Wide ResNets (Zagoruyko & Komodakis 2016) in the layout of TRADES (yaodongyu/TRADES ``models/wideresnet.py``).

RobustBench's CIFAR WideResNet uses the same names, so TRADES, MART, AWP and many RobustBench WRN-34-10 /
WRN-28-10 checkpoints load directly: ``conv1``, ``block{1,2,3}.layer.<i>.{bn1, relu1, conv1, bn2, relu2, conv2,
convShortcut}``, ``bn1``, ``relu``, ``fc``. TRADES also builds a ``sub_block1`` that its forward never uses; its
weights, present in TRADES checkpoints, are dropped on load instead of being carried as dead parameters.
``img_size=64`` is RiFT's Tiny-ImageNet WideResNet (``image_size=64``): the head reads 2x2 pooled cells of the final
map (4 x 640 features for WRN-34-10).
"""

from torch import Tensor, nn

from robustft.errors import UserError
from robustft.models.base import AdapterPoint, ImageClassifier, ModelCfg, build_model
from robustft.models.layers import cell_grid, check_head_cells, conv1x1, conv3x3, init_conv_bn, make_stage, pool_cells
from robustft.models.normalization import NormSpec
from robustft.models.registry import register_model

__all__ = ["WideBasicBlock", "NetworkBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """bn-relu-conv3x3-bn-relu-conv3x3 plus the shortcut (``convShortcut``, a 1x1 conv, when the width changes)."""

    expansion = 1

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = conv3x3(out_planes, out_planes)
        # In WRNs every strided block also widens, so a width change is the only case that needs a projection.
        self.convShortcut = conv1x1(in_planes, out_planes, stride) if in_planes != out_planes else None

    def forward(self, x: Tensor) -> Tensor:
        """Residual block forward."""
        out = self.relu1(self.bn1(x))
        # As in the reference: the projection sees the pre-activated input, the identity the raw one.
        shortcut = x if self.convShortcut is None else self.convShortcut(out)
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + shortcut


class NetworkBlock(nn.Module):
    """A stage of ``WideBasicBlock``s held as ``.layer`` (the reference's extra level of nesting in parameter names)."""

    def __init__(self, depth: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer, _ = make_stage(WideBasicBlock, in_planes, out_planes, depth, stride)

    def forward(self, x: Tensor) -> Tensor:
        """Run the stage."""
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-depth-k: 3x3 stem, three stages of (depth - 4) / 6 blocks of width 16k/32k/64k, bn-relu, pool, ``fc``.

    ``img_size`` (a multiple of 32): the head reads the final map average-pooled in (img_size/32)^2 cells, flattened,
    as the reference's fixed ``avg_pool2d(8)`` does at larger inputs (RiFT's ``WideResNet(image_size=...)``).
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        img_size: int = 32,
        num_classes: int = 10,
        normalization: NormSpec = None,
    ) -> None:
        if (depth - 4) % 6:
            raise UserError(f"WideResNet depth must be 6n+4 (16, 22, 28, 34, ...), got {depth}")
        grid = cell_grid(img_size, 32, "WideResNet")
        cfg = ModelCfg(classifier="fc", input_size=(3, img_size, img_size), normalization="none",
                       unused_checkpoint_prefixes=("sub_block1.",), checkpoint_filter=check_head_cells,
                       adapter_points=(AdapterPoint(WideBasicBlock, channels=True),))
        super().__init__(cfg, normalization)
        self.grid = grid
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = conv3x3(3, widths[0])
        self.block1 = NetworkBlock(n, widths[0], widths[1], stride=1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], stride=2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3] * grid**2, num_classes)
        init_conv_bn(self)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features of images in [0, 1]."""
        x = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        return pool_cells(self.relu(self.bn1(x)), self.grid)


def _create_wide_resnet(variant: str, **kwargs) -> WideResNet:
    """Build a registered WideResNet variant."""
    return build_model(WideResNet, variant, **kwargs)


@register_model
def wide_resnet34_10(**kwargs) -> WideResNet:
    """WRN-34-10, the TRADES / RobustBench CIFAR workhorse (46M parameters)."""
    return _create_wide_resnet("wide_resnet34_10", **dict(dict(depth=34, widen_factor=10), **kwargs))


@register_model
def wide_resnet28_10(**kwargs) -> WideResNet:
    """WRN-28-10 (36M parameters)."""
    return _create_wide_resnet("wide_resnet28_10", **dict(dict(depth=28, widen_factor=10), **kwargs))
