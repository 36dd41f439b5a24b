"""Building blocks shared by the convolutional models: torchvision-style convs, residual stages, init, and the
pooled-cell head of kuangliu-style nets at larger inputs."""

import math

import torch.nn.functional as F
from torch import Tensor, nn

from robustft.errors import UserError

__all__ = ["conv3x3", "conv1x1", "projection", "make_stage", "init_conv_bn", "cell_grid", "pool_cells",
           "check_head_cells"]


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


def cell_grid(img_size: int, design: int, arch: str) -> int:
    """Cells per side of the pooled grid the head reads at inputs of ``img_size`` on a net designed for ``design``
    px: kuangliu's (RiFT's) nets average-pool the final map with a fixed kernel, so 2x larger inputs give 2x2 cells."""
    if img_size < design or img_size % design:
        raise UserError(f"{arch} img_size must be a multiple of {design} (its head reads (img_size/{design})^2 pooled "
                        f"cells of the final map), got {img_size}")
    return img_size // design


def pool_cells(x: Tensor, grid: int) -> Tensor:
    """A final [B, C, H, W] map averaged over ``grid`` x ``grid`` cells and flattened channel-major to [B, C*grid^2]
    (kuangliu's ``avg_pool2d`` then ``reshape``); grid 1 is the global average."""
    return x.mean(dim=(2, 3)) if grid == 1 else F.adaptive_avg_pool2d(x, grid).flatten(1)


def check_head_cells(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Refuse, naming ``img_size``, a checkpoint whose head reads another number of pooled cells than ``model``'s
    (``model.grid``): e.g. RiFT's 64-px Tiny-ImageNet ResNet-18, whose head reads 2x2 cells, 2048 features."""
    cfg, grid = model.pretrained_cfg, model.grid
    head, own = state.get(f"{cfg.classifier}.weight"), model.state_dict()
    per_cell = model.get_classifier().in_features // grid**2
    if (head is None or head.ndim != 2 or head.shape[1] % per_cell or any(
            k in own and v.shape != own[k].shape for k, v in state.items() if not k.startswith(f"{cfg.classifier}."))):
        return state  # no head, or another body: the strict load names what differs
    side = math.isqrt(head.shape[1] // per_cell)
    if side * side * per_cell == head.shape[1] and side != grid:
        size = cfg.input_size[1] // grid * side
        raise UserError(f"{cfg.architecture or type(model).__name__} checkpoint: its head reads {head.shape[1]} "
                        f"features, {side}x{side} pooled cells of the final map, this model {grid}x{grid}: build it "
                        f"with img_size {size} (model.options in a run config, --model-arg img_size={size} for "
                        f"evaluate/mrc, keyword arguments of robustft.load_model)")
    return state
