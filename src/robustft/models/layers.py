"""Building blocks shared by the convolutional models: torchvision-style convs, residual stages, init."""

from torch import nn

__all__ = ["conv3x3", "conv1x1", "projection", "make_stage", "init_conv_bn"]


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias, used for projection shortcuts."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


def projection(in_channels: int, out_channels: int, stride: int, norm: bool = True) -> nn.Sequential:
    """Shortcut of a residual block: conv1x1 (+ BN) when the shape changes, else an empty Sequential (identity).

    An empty Sequential has no state-dict entries, exactly like torchvision's ``downsample=None`` or
    kuangliu's missing ``shortcut``, so one forward (``out + shortcut(x)``) serves every layout.
    """
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    layers = [conv1x1(in_channels, out_channels, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def make_stage(
    block: type[nn.Module], in_channels: int, planes: int, depth: int, stride: int
) -> tuple[nn.Sequential, int]:
    """``depth`` blocks ``block(in, planes, stride)``, the first one strided; returns the stage and its output width.

    ``block.expansion`` is the ratio of a block's output channels to ``planes`` (4 for bottlenecks, else 1).
    """
    blocks = []
    for i in range(depth):
        blocks.append(block(in_channels, planes, stride if i == 0 else 1))
        in_channels = planes * block.expansion
    return nn.Sequential(*blocks), in_channels


def init_conv_bn(model: nn.Module) -> None:
    """He (fan-out) init for convs, unit scale / zero shift for BatchNorm: torchvision's and TRADES' scheme."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
