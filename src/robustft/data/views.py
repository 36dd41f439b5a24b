"""The papers' 224-px views of images stored at their aspect ratio, batched on the batch's device.

A view draws one crop box per sample for the whole batch at once (torchvision's rules: ``RandomResizedCrop``,
``RandomCrop``, ``CenterCrop``), crops and resizes the samples on the pixels' device with PIL's bilinear filter
(antialiased when shrinking, as torchvision's ``resized_crop`` of a PIL image: crop first, then resize; the whole
batch at once off the CPU, see ``resample``), and flips the batch. All randomness comes from one CPU generator, so
the same boxes are drawn whatever device the images live on.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .dataset import to_device
from .resample import crop_resize_batched, crop_resize_each

__all__ = ["View", "VIEW_KINDS", "center_crop_boxes", "crop_resize", "random_crop_boxes", "random_resized_crop_boxes"]

VIEW_KINDS = ("random_resized_crop", "random_crop", "center_crop")

Boxes = torch.Tensor  # int64 N×4: top, left, height, width


def random_resized_crop_boxes(sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                              generator: torch.Generator, tries: int = 10) -> Boxes:
    """torchvision's ``RandomResizedCrop.get_params`` for each (height, width) in ``sizes``, batched.

    Per sample: ``tries`` draws of an area fraction U(scale) and a log-uniform aspect ratio; the first whose
    rounded box (w = round(sqrt(area * ratio)), h = round(sqrt(area / ratio))) fits is placed at a uniform offset;
    if none fits, the centre crop clamped to ``ratio`` (the whole image when its ratio is inside). The draws, in
    order: a N×tries area tensor, a N×tries ratio tensor, then N×2 offsets (all float64 uniforms).
    """
    n = len(sizes)
    height, width = sizes[:, 0:1].double(), sizes[:, 1:2].double()
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator,
                                                                         dtype=torch.float64))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # the first try that fits (0 when none does)
    found = fits.any(dim=1)
    h, w = h.gather(1, first)[:, 0].long(), w.gather(1, first)[:, 0].long()
    offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    height, width = sizes[:, 0], sizes[:, 1]
    top = torch.floor(offsets[:, 0] * (height - h + 1)).long()
    left = torch.floor(offsets[:, 1] * (width - w + 1)).long()
    # The fallback: the centre crop, as wide (or tall) as the ratio range allows.
    in_ratio = width.double() / height.double()
    fw = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]).long(), width)
    fh = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]).long(), height)
    boxes = torch.stack([top, left, h, w], 1)
    fallback = torch.stack([(height - fh) // 2, (width - fw) // 2, fh, fw], 1)
    return torch.where(found[:, None], boxes, fallback)


def random_crop_boxes(sizes: torch.Tensor, size: int, generator: torch.Generator) -> Boxes:
    """torchvision's ``RandomCrop(size)``: a ``size`` square at uniform offsets (top then left, float64 uniforms)."""
    offsets = torch.rand(len(sizes), 2, generator=generator, dtype=torch.float64)
    corner = torch.floor(offsets * (sizes - size + 1)).long()
    return torch.cat([corner, torch.full_like(corner, size)], 1)


def center_crop_boxes(sizes: torch.Tensor, size: int) -> Boxes:
    """torchvision's ``CenterCrop(size)``: top = round((height - size) / 2), left likewise."""
    corner = torch.round((sizes - size).double() / 2).long()
    return torch.cat([corner, torch.full_like(corner, size)], 1)


def crop_resize(pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: Boxes,
                out: int) -> torch.Tensor:
    """The ``boxes`` of packed images, each resized to ``out``×``out``: uint8 N×3×out×out on the pixels' device.

    ``pixels`` is the flat uint8 buffer of H×W×3 images starting at ``offsets`` (in pixels, i.e. bytes / 3) with
    ``sizes`` (height, width); ``offsets``, ``sizes`` and ``boxes`` are CPU tensors. A box as large as the output is
    copied exactly; any other is resized with the antialiased bilinear filter PIL uses, within one grey level of
    PIL's ``crop(box).resize``: one sample at a time in uint8 on the CPU (``crop_resize_each``, the faster there),
    the whole batch at once elsewhere (``crop_resize_batched``: batched matrix products in float32).
    """
    resize = crop_resize_each if pixels.device.type == "cpu" else crop_resize_batched
    return resize(pixels, offsets, sizes, boxes, out)


@dataclass(frozen=True)
class View:
    """One named view: how a box is drawn (``kind``), the output side ``size``, and a random horizontal flip."""

    kind: Literal[VIEW_KINDS]
    size: int
    hflip: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def boxes(self, sizes: torch.Tensor, generator: torch.Generator | None) -> Boxes:
        """One crop box per (height, width) in ``sizes`` (a CPU tensor)."""
        if self.kind == "random_resized_crop":
            return random_resized_crop_boxes(sizes, self.scale, self.ratio, generator)
        if self.kind == "random_crop":
            return random_crop_boxes(sizes, self.size, generator)
        return center_crop_boxes(sizes, self.size)

    def draw(self, sizes: torch.Tensor, generator: torch.Generator | None) -> tuple[Boxes, torch.Tensor | None]:
        """Everything random about the views of images of ``sizes``: their boxes, then their flips (or None)."""
        boxes = self.boxes(sizes.cpu(), generator)
        return boxes, (torch.rand(len(sizes), generator=generator) < 0.5) if self.hflip else None

    def apply(self, pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: Boxes,
              flips: torch.Tensor | None) -> torch.Tensor:
        """The drawn views of packed images as uint8 N×3×size×size on the pixels' device."""
        x = crop_resize(pixels, offsets, sizes, boxes, self.size)
        if flips is not None:
            x = torch.where(to_device(flips, x.device)[:, None, None, None], x.flip(-1), x)
        return x

    def __call__(self, pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw and apply the view of each packed image (boxes first, then flips, from ``generator``)."""
        return self.apply(pixels, offsets, sizes, *self.draw(sizes, generator))
