"""Crops of packed images resized to a square with PIL's antialiased bilinear filter, as ``crop(box).resize`` does.

Two ways to the same filter (a triangle, widened by the scale when shrinking, align_corners=False, each output
pixel's weights normalised to sum 1): ``crop_resize_each`` resizes one sample at a time with
``F.interpolate(antialias=True)`` in uint8 (the faster on a CPU); ``crop_resize_batched`` resizes the whole batch
at once on any device, as two batched matrix products per channel, ``Wy @ crop @ Wxᵀ``, with each sample's weights
over its crop's rows and columns (zero past its edges) in float32, then rounded. Both are within one grey level of
PIL's; a box as large as the output is copied exactly by both.
"""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from ..runtime import full_fp32
from .dataset import to_device

__all__ = ["crop_resize_batched", "crop_resize_each"]


def crop_resize_each(pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor,
                     out: int) -> torch.Tensor:
    """``crop_resize`` of CPU pixels, one sample at a time in uint8 on one thread (as PIL, within a grey level)."""
    x = torch.empty((len(boxes), out, out, 3), dtype=torch.uint8)
    with _one_thread():
        for i, ((top, left, h, w), start, (height, width)) in enumerate(zip(boxes.tolist(), offsets.tolist(),
                                                                            sizes.tolist())):
            crop = pixels[start * 3:(start + height * width) * 3].view(height, width, 3)[top:top + h, left:left + w]
            if (h, w) == (out, out):
                x[i] = crop
                continue
            crop = crop.permute(2, 0, 1)[None]  # a channels-last view: no copy
            x[i] = F.interpolate(crop, size=(out, out), mode="bilinear", align_corners=False,
                                 antialias=True)[0].permute(1, 2, 0)
    return x.permute(0, 3, 1, 2)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one CPU thread: one image is too little work to split (with several threads
    on a busy CPU, resizing a 224-px crop takes about 10× longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def crop_resize_batched(pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor,
                        out: int) -> torch.Tensor:
    """``crop_resize`` of the whole batch at once on the pixels' device: each crop's rows gathered into one padded
    uint8 N×Hmax×Wmax×3 tensor (Hmax, Wmax: the largest crop's sides), then per channel ``Wy @ crop @ Wxᵀ`` in true
    fp32 (no TF32, no autocast), rounded; a batch of copy boxes is only gathered."""
    if not len(boxes):
        return torch.empty((0, 3, out, out), dtype=torch.uint8, device=pixels.device)
    h, w = boxes[:, 2], boxes[:, 3]
    hmax, wmax = boxes[:, 2:].amax(0).tolist()
    rows = _gather_crops(pixels, offsets, sizes, boxes, hmax, wmax)
    if bool(((h == out) & (w == out)).all()):
        return rows.permute(0, 3, 1, 2)
    lengths = to_device(boxes[:, 2:].t().contiguous(), pixels.device)
    wy, wx = _filter_weights(lengths[0], hmax, out), _filter_weights(lengths[1], wmax, out).transpose(1, 2)
    x = torch.empty((len(boxes), out, out, 3), dtype=torch.uint8, device=pixels.device)
    with full_fp32():
        for c in range(3):  # one channel at a time: a third of the float intermediates
            x[..., c] = torch.bmm(torch.bmm(wy, rows[..., c].float()), wx).round_().clamp_(0, 255)
    return x.permute(0, 3, 1, 2)


def _gather_crops(pixels: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor,
                  hmax: int, wmax: int) -> torch.Tensor:
    """uint8 N×hmax×wmax×3: each crop's rows from its left edge, ``wmax`` pixels long (past the crop's right edge:
    whatever the buffer holds next, zeros past its end), its last row repeated below it; indices built on the CPU."""
    top, left, h = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]
    row = torch.minimum(torch.arange(hmax), h - 1)
    starts = offsets[:, None] + (top + row) * sizes[:, 1:2] + left  # the pixel each gathered row starts at
    last = pixels.numel() // 3 - wmax  # the last pixel a whole row of wmax pixels starts at
    span = wmax * 3
    crops = pixels.unfold(0, span, 3)[to_device(starts.clamp(max=last), pixels.device)]  # unfold: a view, no copy
    over = (starts > last).view(-1).nonzero()[:, 0]
    if len(over):  # rows that run past the buffer's end: read from a copy of its tail, zero-padded
        tail = torch.cat([pixels[last * 3:], pixels.new_zeros(span)]).unfold(0, span, 3)
        crops.view(-1, span)[to_device(over, pixels.device)] = tail[to_device(starts.view(-1)[over] - last,
                                                                              pixels.device)]
    return crops.view(len(boxes), hmax, wmax, 3)


def _filter_weights(lengths: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """float32 N×out×size: row i of sample n holds output pixel i's weights over the first ``lengths[n]`` of
    ``size`` input pixels (zero beyond), PIL's bilinear triangle widened by the scale when shrinking, normalised."""
    scale = (lengths.float() / out)[:, None, None]
    centre = (torch.arange(out, device=lengths.device, dtype=torch.float32)[:, None] + 0.5) * scale
    source = torch.arange(size, device=lengths.device)
    weights = (source + 0.5 - centre).div_(scale.clamp(min=1)).abs_().neg_().add_(1).clamp_(min=0)
    weights.masked_fill_(source >= lengths[:, None, None], 0)
    return weights.div_(weights.sum(2, keepdim=True))
