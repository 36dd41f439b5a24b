"""iterate_batches: coverage, exact mid-epoch resume, formats."""

import pytest
import torch

from robustft.data import ArrayDataset, Augment, iterate_batches, num_batches


@pytest.fixture
def ds() -> ArrayDataset:
    """103 random 6×6 images with label = index, so batches reveal which samples they hold."""
    x = torch.randint(0, 256, (103, 3, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return ArrayDataset(x, torch.arange(103), [str(i) for i in range(103)], "toy")


def test_shuffled_epoch_covers_every_sample_once_and_epochs_differ(ds):
    g = torch.Generator().manual_seed(0)
    epochs = [torch.cat([y for _, y in iterate_batches(ds, 10, shuffle=True, generator=g)]) for _ in range(2)]
    for order in epochs:
        assert torch.equal(order.sort().values, torch.arange(103))
    assert not torch.equal(epochs[0], epochs[1])


def test_batches_are_float_in_unit_range_and_match_the_data(ds):
    batches = list(iterate_batches(ds, 32))
    assert [len(y) for _, y in batches] == [32, 32, 32, 7] and num_batches(103, 32) == 4
    x, y = batches[1]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, ds.x[32:64].float() / 255) and torch.equal(y, ds.y[32:64])
    assert [len(y) for _, y in iterate_batches(ds, 32, drop_last=True)] == [32] * num_batches(103, 32, True) == [32] * 3
    x, _ = next(iterate_batches(ds, 8, channels_last=True))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_start_yields_the_exact_tail_of_the_epoch(ds):
    aug = Augment.cifar()
    g_full, g_resumed = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    full = list(iterate_batches(ds, 16, shuffle=True, generator=g_full, augment=aug))
    tail = list(iterate_batches(ds, 16, shuffle=True, generator=g_resumed, augment=aug, start=3))
    assert len(tail) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], tail, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(g_full.get_state(), g_resumed.get_state())  # the next epoch is unaffected by resuming
    assert not torch.equal(full[3][0], ds.x[full[3][1]].float() / 255)  # augmentation did change the pixels


def test_randomness_without_a_generator_is_refused(ds):
    with pytest.raises(ValueError, match="Generator"):
        iterate_batches(ds, 8, shuffle=True)
    with pytest.raises(ValueError, match="start"):
        iterate_batches(ds, 8, start=99)
