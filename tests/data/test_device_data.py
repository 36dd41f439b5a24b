"""Data on the test device (``pytest -m cuda``): a loaded split lives there, batches are made there, the papers'
views are cropped and resized there, and a host tensor bound for a GPU goes through pinned memory with an
asynchronous copy."""

import numpy as np
import pytest
import torch

from robustft.data import PackedImages, View, iterate_batches, load_dataset, to_device
from robustft.data.resample import crop_resize_batched
from robustft.data.views import center_crop_boxes, random_resized_crop_boxes
from support import pil_crop_resize, smooth_images

pytestmark = pytest.mark.cuda


def test_a_loaded_split_and_its_batches_live_on_the_device(npz_data, device):
    data = load_dataset(str(npz_data), "test", device=device)
    assert data.x.device.type == data.y.device.type == device.type
    for x, y in iterate_batches(data, 8, channels_last=True):
        assert x.device.type == y.device.type == device.type and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_views_on_the_device_are_pils_within_one_grey_level_and_copy_boxes_exact(device):
    sizes = [(256, 341), (341, 256), (256, 1200), (60, 40), (256, 300)] * 2
    arrays = smooth_images(sizes, seed=3)
    packed = PackedImages.pack([torch.from_numpy(a) for a in arrays])
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([random_resized_crop_boxes(packed.sizes[:5], (0.08, 1.0), (3 / 4, 4 / 3), g),
                       center_crop_boxes(packed.sizes[5:8], 224), torch.tensor([[3, 5, 50, 1], [3, 5, 250, 1]])])
    flips = torch.arange(10) % 2 == 0
    pixels = to_device(packed.pixels, device)
    out = View("random_resized_crop", 224, hflip=True).apply(pixels, packed.offsets, packed.sizes, boxes, flips)
    assert out.device.type == device.type and out.shape == (10, 3, 224, 224)
    unflipped = torch.where(flips.to(device)[:, None, None, None], out.flip(-1), out)
    if device.type != "cpu":  # off the CPU the whole batch is resized at once
        assert torch.equal(unflipped, crop_resize_batched(pixels, packed.offsets, packed.sizes, boxes, 224))
    for i, box in enumerate(boxes.tolist()):
        got = unflipped[i].permute(1, 2, 0).cpu().numpy().astype(np.int64)
        diff = np.abs(got - pil_crop_resize(arrays[i], box, 224))
        assert diff.max() <= 1, f"sample {i} box {box}"
        assert box[2:] != [224, 224] or diff.max() == 0, "a copy box is copied exactly"


def test_host_tensors_reach_the_device_through_pinned_memory(device, monkeypatch):
    pinned, copies = [], []
    pin, to = torch.Tensor.pin_memory, torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a: pinned.append(t.shape) or pin(t, *a))
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **kw: copies.append(kw.get("non_blocking", False))
                        or to(t, *a, **kw))
    host = torch.arange(48, dtype=torch.uint8).view(2, 3, 2, 4)
    moved = to_device(host, device)
    assert moved.device.type == device.type and torch.equal(moved.cpu(), host)
    on_gpu = device.type == "cuda"
    assert pinned == ([host.shape] if on_gpu else []) and copies == [on_gpu]
    assert to_device(moved, device) is moved, "no copy when already there"
