"""Deterministic split arithmetic: the stratified (or group-aware) train/val carve-out and the evenly spaced
subset."""

import torch

from ..errors import UserError

__all__ = ["SPLITS", "stratified_split", "group_split", "subset_indices"]

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


def group_split(labels: torch.Tensor, groups: torch.Tensor, val_fraction: float,
                seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(train, val)`` indices that never split a group: the samples of one class sharing a group id (a
    track of near-duplicate frames, a video, a patient) go to the same side.

    Per class, its groups in a random order (one ``randperm`` seeded with ``seed``) go to val until val holds at
    least ``round(val_fraction * count)`` of the class's samples, so the carve-out is class-stratified to within a
    group; a class with at least 2 groups keeps at least 1 in train and (when ``val_fraction > 0``) puts at least 1
    in val. Depends only on ``labels``, ``groups`` and ``seed``.
    """
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels, groups = labels.cpu(), groups.cpu().long()
    if groups.shape != labels.shape:
        raise UserError(f"the group array has shape {tuple(groups.shape)} but there are {len(labels)} labels; give "
                        f"one group id per sample")
    pairs, unit = torch.unique(torch.stack([labels, groups]), dim=1, return_inverse=True)  # (class, group) units
    unit_label, sizes = pairs[0], torch.bincount(unit, minlength=pairs.shape[1])
    order = torch.randperm(len(unit_label), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(unit_label[order], stable=True)]  # grouped by class, random within a class
    is_val = torch.zeros(len(unit_label), dtype=torch.bool)
    for c in unit_label.unique():
        units = order[unit_label[order] == c]
        target = round(val_fraction * int(sizes[units].sum()))
        before = torch.cumsum(sizes[units], 0) - sizes[units]  # class samples in val before each unit is added
        take = before < max(target, 1 if val_fraction > 0 else 0)
        take[-1] = False  # a class's last group stays in train
        is_val[units[take]] = True
    val = is_val[unit]
    idx = torch.arange(len(labels))
    return idx[~val], idx[val]


def subset_indices(length: int, n: int) -> torch.Tensor:
    """Indices ``round(i * length / n)`` for ``i < n``: ``n`` evenly spaced samples in canonical order."""
    if not 1 <= n <= length:
        raise UserError(f"cannot take n={n} samples from a split of {length} images; pass 1 <= n <= {length}")
    return torch.round(torch.arange(n, dtype=torch.float64) * length / n).long()
