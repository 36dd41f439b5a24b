"""Data on the test device (``pytest -m cuda``): a loaded split lives there, batches are made there, and a host
tensor bound for a GPU goes through pinned memory with an asynchronous copy."""

import pytest
import torch

from robustft.data import iterate_batches, load_dataset, to_device

pytestmark = pytest.mark.cuda


def test_a_loaded_split_and_its_batches_live_on_the_device(npz_data, device):
    data = load_dataset(str(npz_data), "test", device=device)
    assert data.x.device.type == data.y.device.type == device.type
    for x, y in iterate_batches(data, 8, channels_last=True):
        assert x.device.type == y.device.type == device.type and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)


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
