"""The batched crop-resize against the per-sample path, PIL, and PIL's filter written out per output pixel."""

import numpy as np
import torch

from robustft.data.packed import PackedImages
from robustft.data.resample import crop_resize_batched, crop_resize_each
from robustft.data.views import center_crop_boxes, random_crop_boxes, random_resized_crop_boxes
from support import pil_crop_resize, smooth_images

SIZES = [(256, 341), (341, 256), (256, 256), (256, 1200), (900, 256), (256, 300), (60, 40), (256, 470)]
OUT = 224


def _batch() -> tuple[list[np.ndarray], PackedImages, torch.Tensor]:
    """Each sample's image, the packed batch (sharing one buffer) and its boxes: random-resized (scale 0.08: up- and
    downscaling, non-square), random and centre crops (copies), 1-px-wide, 1-px-tall and 1×1 boxes, and boxes on
    the last image of the buffer, down to its last pixel."""
    sizes = torch.tensor(SIZES * 2)
    arrays = smooth_images(SIZES * 2, seed=4)
    packed = PackedImages.pack([torch.from_numpy(a) for a in arrays])
    g = torch.Generator().manual_seed(5)
    boxes = [random_resized_crop_boxes(sizes, (0.08, 1.0), (3 / 4, 4 / 3), g)[:12],
             random_crop_boxes(sizes[:2], OUT, g), center_crop_boxes(sizes[2:4], OUT),
             torch.tensor([[10, 20, 200, 1], [5, 0, 1, 256], [100, 100, 1, 1], [0, 255, 256, 1]]),
             torch.tensor([[200, 330, 56, 140], [255, 469, 1, 1], [0, 469, 256, 1], [1, 200, 255, 270]])]
    owners = list(range(12)) + [0, 1, 2, 3] + [0, 1, 4, 2] + [15] * 4  # image 15 ends the buffer
    return [arrays[i] for i in owners], packed[torch.tensor(owners)], torch.cat(boxes)


def _pil_weights(length: int, out: int) -> np.ndarray:
    """out×length: PIL's bilinear coefficients (ImagingResample's precompute step) for ``length`` pixels to ``out``,
    written per output pixel over its window [xmin, xmax)."""
    scale = length / out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    weights = np.zeros((out, length))
    for xx in range(out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), length)
        k = [max(0.0, 1.0 - abs((x + xmin - center + 0.5) / filterscale)) for x in range(xmax - xmin)]
        weights[xx, xmin:xmax] = np.array(k) / sum(k)
    return weights


def test_the_batched_resize_matches_the_per_sample_path_and_pil_within_one_grey_level():
    arrays, packed, boxes = _batch()
    batched = crop_resize_batched(packed.pixels, packed.offsets, packed.sizes, boxes, OUT)
    each = crop_resize_each(packed.pixels, packed.offsets, packed.sizes, boxes, OUT)
    assert batched.shape == (len(boxes), 3, OUT, OUT) and batched.dtype == torch.uint8
    assert (batched.int() - each.int()).abs().max() <= 1
    kinds = set()
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        got = batched[i].permute(1, 2, 0).numpy().astype(np.int64)
        diff = np.abs(got - pil_crop_resize(arrays[i], (top, left, h, w), OUT))
        assert diff.max() <= 1, f"sample {i} box {(top, left, h, w)}: off by {diff.max()}"
        if (h, w) == (OUT, OUT):
            assert np.array_equal(got, arrays[i][top:top + h, left:left + w]), "a copy box is copied exactly"
        kinds |= {"copy" if (h, w) == (OUT, OUT) else "up" if max(h, w) < OUT else "down" if min(h, w) > OUT
                  else "mixed"}
    assert kinds == {"copy", "up", "down", "mixed"}
    assert packed.offsets[-1] + 255 * 470 + 469 == packed.pixels.numel() // 3 - 1  # the last box ends the buffer


def test_the_batched_resize_is_pils_filter_in_float():
    arrays, packed, boxes = _batch()
    batched = crop_resize_batched(packed.pixels, packed.offsets, packed.sizes, boxes, OUT)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = arrays[i][top:top + h, left:left + w].astype(np.float64)
        rows = np.tensordot(_pil_weights(h, OUT), crop, axes=(1, 0))  # out×w×3
        ref = np.tensordot(rows, _pil_weights(w, OUT), axes=(1, 1)).transpose(0, 2, 1)
        diff = np.abs(batched[i].permute(1, 2, 0).numpy() - np.clip(np.round(ref), 0, 255))
        tie = np.abs(ref - np.floor(ref) - 0.5) < 1e-3  # a half: float32 may round it either way
        assert diff.max() <= 1 and diff[~tie].max() == 0, f"sample {i} box {(top, left, h, w)}"


def test_the_batched_resize_reads_a_buffer_view_and_ignores_autocast_and_an_empty_batch():
    _, packed, boxes = _batch()
    expected = crop_resize_batched(packed.pixels, packed.offsets, packed.sizes, boxes, OUT)
    shifted = torch.cat([torch.full((30,), 7, dtype=torch.uint8), packed.pixels])[30:]  # a view at an offset
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(crop_resize_batched(shifted, packed.offsets, packed.sizes, boxes, OUT), expected)
    empty = crop_resize_batched(packed.pixels, packed.offsets[:0], packed.sizes[:0], boxes[:0], OUT)
    assert empty.shape == (0, 3, OUT, OUT)
