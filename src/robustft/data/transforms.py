"""Batched image augmentation as pure tensor ops on the batch's device (uint8 or float, N×C×H×W).

Random numbers are drawn on the generator's device and then moved to the batch, so a CPU generator gives the
same augmentation whether the batch lives on the CPU or a GPU.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augment", "random_crop", "random_hflip", "resize"]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each side by ``padding`` and crop back to H×W at an independent random offset per sample."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator, device=generator.device)
    offsets = offsets.to(x.device)
    rows = offsets[0] + torch.arange(h, device=x.device)  # (n, h): source row of each output row, in padded coords
    cols = offsets[1] + torch.arange(w, device=x.device)  # (n, w)
    padded = F.pad(x, (padding,) * 4)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # one gather for the batch


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (an int means square), antialiased when shrinking; keeps the dtype."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    # Interpolate in float32: uint8 and half interpolation are not supported on every device.
    out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    if x.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(x.dtype)


@dataclass(frozen=True)
class Augment:
    """Random crop (zero padding ``crop_padding``), random horizontal flip, then resize to ``size``, in that order.

    Cropping happens before resizing, so ``crop_padding`` is in source pixels and the crop runs at low resolution.
    """

    crop_padding: int = 0
    hflip: bool = False
    size: int | None = None

    @classmethod
    def cifar(cls, size: int | None = None) -> "Augment":
        """The standard CIFAR recipe: 4-pixel padded random crop and horizontal flip."""
        return cls(crop_padding=4, hflip=True, size=size)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment the batch ``x`` (N×C×H×W) with randomness from ``generator``."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        if self.size is not None:
            x = resize(x, self.size)
        return x
