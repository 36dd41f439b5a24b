"""Batches straight from an in-memory :class:`ArrayDataset`: index, augment and convert on its device."""

from collections.abc import Iterator

import torch

from .dataset import ArrayDataset
from .packed import PackedDataset
from .transforms import Augment
from .views import View

__all__ = ["iterate_batches", "num_batches"]


def num_batches(length: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch over ``length`` samples."""
    return length // batch_size if drop_last else -(-length // batch_size)


def iterate_batches(ds: ArrayDataset | PackedDataset, batch_size: int, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, augment: Augment | View | None = None,
                    drop_last: bool = False, channels_last: bool = False,
                    start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x, y)`` batches: x float32 in [0, 1] (N×C×H×W), y int64, both on ``ds``'s device.

    All of the epoch's randomness is drawn from ``generator`` by this call, before any batch is produced: one
    ``randperm`` (if ``shuffle``) and then one 62-bit seed (if ``augment``); batch ``k`` is augmented with a fresh
    CPU generator seeded ``seed + k``. So ``start=k`` (skip the first ``k`` batches, to resume mid-epoch) yields
    bit-identical batches to the tail of the full epoch and leaves ``generator`` in the same state. To resume,
    restore the generator state saved before this epoch's call and pass the number of batches already done.

    A :class:`PackedDataset` takes a :class:`View` as ``augment`` (default: its evaluation view, the centre crop),
    drawn from the same per-batch generator.
    """
    if (shuffle or augment is not None) and generator is None:
        raise ValueError("shuffle and augment need an explicit torch.Generator")
    total = num_batches(len(ds), batch_size, drop_last)
    if not 0 <= start <= total:
        raise ValueError(f"start={start} is outside 0..{total} (batches per epoch)")
    order = None
    if shuffle:
        order = torch.randperm(len(ds), generator=generator, device=generator.device).to(ds.y.device)
    seed = 0
    if augment is not None:
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return _batches(ds, batch_size, order, augment, seed, channels_last, range(start, total))


def _batches(ds: ArrayDataset | PackedDataset, batch_size: int, order: torch.Tensor | None,
             augment: Augment | View | None, seed: int, channels_last: bool, steps: range) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``steps`` of an epoch whose randomness ``iterate_batches`` already drew."""
    for k in steps:
        idx = slice(k * batch_size, (k + 1) * batch_size)
        if order is not None:
            idx = order[idx]
        if isinstance(ds, PackedDataset):
            x = ds.batch(idx, augment, torch.Generator().manual_seed(seed + k)).float().div_(255)
        else:
            x = ds.x[idx].float().div_(255)
            if augment is not None:
                x = augment(x, torch.Generator().manual_seed(seed + k))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, ds.y[idx]

