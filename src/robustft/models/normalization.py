"""Input normalization as the model's first layer, so every model takes RGB in [0, 1].

Attacks and augmentation then work in pixel space (ε is a pixel distance) and a saved state dict carries the
mean/std it was trained with as the buffers ``normalize.mean`` / ``normalize.std``.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustft.errors import UserError

__all__ = ["NORMALIZATIONS", "NormSpec", "Normalize", "resolve_normalization", "set_normalization",
           "describe_normalization"]

Stats = tuple[tuple[float, ...], tuple[float, ...]]
NormSpec = str | tuple[Sequence[float], Sequence[float]] | None

# Per-channel RGB statistics of each dataset's training split, as the robust-training literature uses them.
NORMALIZATIONS: dict[str, Stats] = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel mean and std kept as persistent buffers of shape [1, 3, 1, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Normalize a batch of images in [0, 1]."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """Show the statistics in ``print(model)``."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _parse_stats(text: str) -> Stats:
    """Parse ``"m1,m2,m3/s1,s2,s3"``."""
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError:
        raise UserError(
            f"bad normalization {text!r}: use one of {sorted(NORMALIZATIONS)} or 'm1,m2,m3/s1,s2,s3'"
        ) from None
    return mean, std


def resolve_normalization(spec: NormSpec) -> Stats:
    """Turn a preset name, ``"m1,m2,m3/s1,s2,s3"``, a ``(mean, std)`` pair or None (identity) into (mean, std)."""
    if spec is None:
        return NORMALIZATIONS["none"]
    if isinstance(spec, str):
        key = spec.strip().lower()
        mean, std = NORMALIZATIONS[key] if key in NORMALIZATIONS else _parse_stats(key)
    else:
        try:
            mean, std = (tuple(float(v) for v in part) for part in spec)
        except (TypeError, ValueError):
            raise UserError(
                f"bad normalization {spec!r}: give a preset name, 'm1,m2,m3/s1,s2,s3' or a (mean, std) pair"
            ) from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UserError(f"bad normalization {spec!r}: need 3 means and 3 positive standard deviations (RGB)")
    return mean, std


def set_normalization(model: nn.Module, spec: NormSpec) -> nn.Module:
    """Overwrite the statistics of the model's input normalization (its first ``Normalize`` module) in place."""
    normalize = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    if normalize is None:
        raise UserError(f"{type(model).__name__} has no Normalize layer; build it with robustft.models.create_model")
    mean, std = resolve_normalization(spec)
    with torch.no_grad():
        normalize.mean.copy_(torch.tensor(mean).reshape(normalize.mean.shape))
        normalize.std.copy_(torch.tensor(std).reshape(normalize.std.shape))
    return model


def describe_normalization(mean: Sequence[float], std: Sequence[float]) -> str:
    """``imagenet (mean 0.485,0.456,0.406, std 0.229,0.224,0.225)``: the statistics, with the preset they match."""
    stats = f"mean {','.join(f'{v:.4g}' for v in mean)}, std {','.join(f'{v:.4g}' for v in std)}"
    rounded = [round(v, 6) for v in (*mean, *std)]  # float32 buffers hold 0.485 as 0.48500001...
    preset = next((name for name, (m, s) in NORMALIZATIONS.items() if rounded == [*m, *s]), None)
    return f"{preset} ({stats})" if preset else stats
