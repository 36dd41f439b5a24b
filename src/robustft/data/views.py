"""The papers' 224-px views of images stored at their aspect ratio, batched on the batch's device.

A view draws one crop box per sample (torchvision's rules: ``RandomResizedCrop``, ``RandomCrop``, ``CenterCrop``),
then crops and resizes the whole batch at once with PIL's bilinear filter (antialiased when shrinking, as
torchvision's ``resized_crop`` of a PIL image: crop first, then resize), and optionally flips. All randomness comes
from one CPU generator, so the same boxes are drawn whatever device the images live on.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["View", "VIEW_KINDS", "center_crop_boxes", "crop_resize", "random_crop_boxes", "random_resized_crop_boxes"]

VIEW_KINDS = ("random_resized_crop", "random_crop", "center_crop")
CHUNK = 64  # samples cropped at once: bounds the gathered crops' memory at about CHUNK × 3 × H × W floats

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


def _weights(length: torch.Tensor, out: int, span: int) -> torch.Tensor:
    """PIL's bilinear resampling weights (N×out×span) from ``length`` source pixels (per sample) to ``out``.

    Output pixel ``i`` is centred at ``(i + 0.5) * scale`` in source pixels; source pixel ``j`` gets the triangle
    ``max(0, 1 - |j + 0.5 - centre| / s)`` with ``s = max(scale, 1)`` (antialiasing when shrinking), rows
    normalised to sum 1 and pixels past ``length`` (padding up to ``span``) weighted 0.
    """
    length = length.to(torch.float64)[:, None, None]
    scale = length / out
    support = scale.clamp(min=1)
    centre = (torch.arange(out, dtype=torch.float64, device=length.device)[None, :, None] + 0.5) * scale
    j = torch.arange(span, dtype=torch.float64, device=length.device)[None, None, :]
    w = (1 - (j + 0.5 - centre).abs() / support).clamp_(min=0) * (j < length)
    return (w / w.sum(-1, keepdim=True)).float()


def crop_resize(pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: Boxes,
                out: int) -> torch.Tensor:
    """The ``boxes`` of packed images, each resized to ``out``×``out``: float32 N×3×out×out in 0..255.

    ``pixels`` is the flat uint8 buffer of H×W×3 images starting at ``offsets`` (in pixels, i.e. bytes / 3) with
    ``sizes`` (height, width). A box as large as the output is copied exactly; any other is resized with PIL's
    bilinear filter (see ``_weights``), so the result is within rounding of PIL's ``crop(box).resize``.
    """
    device = pixels.device
    flat = pixels.view(-1, 3)
    parts = []
    for start in range(0, len(boxes), CHUNK):
        box, off, width = (t[start:start + CHUNK].to(device) for t in (boxes, offsets, sizes[:, 1]))
        span_h, span_w = int(box[:, 2].max()), int(box[:, 3].max())
        rows = torch.minimum(torch.arange(span_h, device=device)[None], box[:, 2:3] - 1) + box[:, 0:1]  # n×span_h
        cols = torch.minimum(torch.arange(span_w, device=device)[None], box[:, 3:4] - 1) + box[:, 1:2]  # n×span_w
        index = off[:, None, None] + rows[:, :, None] * width[:, None, None] + cols[:, None, :]
        crops = flat[index].permute(0, 3, 1, 2).float()  # n×3×span_h×span_w, padded by repeating the edge
        wy = _weights(box[:, 2], out, span_h)[:, None]  # n×1×out×span_h
        wx = _weights(box[:, 3], out, span_w)[:, None]  # n×1×out×span_w
        parts.append(wy @ crops @ wx.transpose(-1, -2))
    return torch.cat(parts)


@dataclass(frozen=True)
class View:
    """One named view: how a box is drawn (``kind``), the output side ``size``, and a random horizontal flip."""

    kind: Literal[VIEW_KINDS]
    size: int
    hflip: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def random(self) -> bool:
        """Whether the view draws anything from a generator."""
        return self.kind != "center_crop" or self.hflip

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
        x = crop_resize(pixels, offsets, sizes, boxes, self.size).round_().clamp_(0, 255).to(torch.uint8)
        if flips is not None:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x

    def __call__(self, pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw and apply the view of each packed image (boxes first, then flips, from ``generator``)."""
        return self.apply(pixels, offsets, sizes, *self.draw(sizes, generator))
