"""Batches straight from an in-memory :class:`ArrayDataset`: index, augment and convert on its device."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

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
                    drop_last: bool = False, channels_last: bool = False, start: int = 0,
                    shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``(x, y)`` batches: x float32 in [0, 1] (N×C×H×W), y int64, both on ``ds``'s device.

    All of the epoch's randomness is drawn from ``generator`` by this call, before any batch is produced: one
    ``randperm`` (if ``shuffle``) and then one 62-bit seed (if ``augment``); batch ``k`` is augmented with a fresh
    CPU generator seeded ``seed + k``. So ``start=k`` (skip the first ``k`` batches, to resume mid-epoch) yields
    bit-identical batches to the tail of the full epoch and leaves ``generator`` in the same state. To resume,
    restore the generator state saved before this epoch's call and pass the number of batches already done.

    ``shard`` = (rank, world size) yields only this rank's share of each global batch (every ``world``-th sample
    from ``rank``), the randomness still drawn for the whole batch. A :class:`PackedDataset` takes a :class:`View`
    as ``augment`` (default: its evaluation view, the centre crop), drawn from the same per-batch generator; it reads
    only this rank's images, each batch's on a background thread while the previous one is used.
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
    steps = range(start, total)
    if isinstance(ds, PackedDataset):
        return _packed_batches(ds, batch_size, order, augment, seed, channels_last, steps, shard)
    return _batches(ds, batch_size, order, augment, seed, channels_last, steps, shard)


def _batch_index(k: int, batch_size: int, order: torch.Tensor | None) -> torch.Tensor | slice:
    """The samples of batch ``k``."""
    idx = slice(k * batch_size, (k + 1) * batch_size)
    return idx if order is None else order[idx]


def _batches(ds: ArrayDataset, batch_size: int, order: torch.Tensor | None, augment: Augment | None, seed: int,
             channels_last: bool, steps: range, shard: tuple[int, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches ``steps`` of an epoch whose randomness ``iterate_batches`` already drew."""
    rank, world = shard
    for k in steps:
        idx = _batch_index(k, batch_size, order)
        x = ds.x[idx].float().div_(255)
        if augment is not None:
            x = augment(x, torch.Generator().manual_seed(seed + k))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield (x, ds.y[idx]) if world == 1 else (x[rank::world], ds.y[idx][rank::world])


def _packed_batches(ds: PackedDataset, batch_size: int, order: torch.Tensor | None, augment: View | None, seed: int,
                    channels_last: bool, steps: range,
                    shard: tuple[int, int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``_batches`` of packed images: batch ``k + 1`` is drawn and read on a thread while batch ``k`` is used."""
    rank, world = shard

    def prepare(k: int) -> tuple:
        idx = _batch_index(k, batch_size, order)
        return ds.prepare(idx, augment, torch.Generator().manual_seed(seed + k), shard), ds.y[idx][rank::world]

    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(prepare, steps[0]) if steps else None
        for i in range(len(steps)):
            prepared, y = ahead.result()
            if i + 1 < len(steps):
                ahead = pool.submit(prepare, steps[i + 1])
            x = ds.apply(prepared).float().div_(255)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

