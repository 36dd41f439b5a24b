"""Deterministic split arithmetic: the stratified train/val carve-out and the evenly spaced subset."""

import torch

from ..errors import UserError

__all__ = ["SPLITS", "stratified_split", "subset_indices"]

SPLITS = ("train", "val", "test", "train_full")
"""Split names ``load_dataset`` accepts; ``train`` excludes the val carve-out, ``train_full`` does not."""


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(train, val)`` indices: ``round(val_fraction * count)`` random samples of each class go to val.

    Every class with at least 2 samples puts at least 1 in val (when ``val_fraction > 0``) and keeps at least 1
    in train. The draw is one ``randperm`` from a generator seeded with ``seed``, stably sorted by label, which is
    a uniformly random permutation within each class, so it depends only on ``labels`` and ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = labels.cpu()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(labels[order], stable=True)]  # grouped by class, random within a class
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    k = torch.round(val_fraction * counts.double()).long()
    if val_fraction > 0:
        k = torch.maximum(k, torch.ones_like(k))
    k = torch.minimum(k, counts - 1)
    sorted_labels = labels[order]
    rank = torch.arange(len(labels)) - starts[sorted_labels]  # position of each sample within its class
    is_val = rank < k[sorted_labels]
    return order[~is_val].sort().values, order[is_val].sort().values


def subset_indices(length: int, n: int) -> torch.Tensor:
    """Indices ``round(i * length / n)`` for ``i < n``: ``n`` evenly spaced samples in canonical order."""
    if not 1 <= n <= length:
        raise UserError(f"cannot take n={n} samples from a split of {length} images; pass 1 <= n <= {length}")
    return torch.round(torch.arange(n, dtype=torch.float64) * length / n).long()
