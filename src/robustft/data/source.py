"""A dataset as found on disk: its class names and raw splits, each loaded only when asked for, and the two
reshapings a run may ask for: a subset of classes and a test split carved from the training data."""

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .splits import group_split, stratified_split

__all__ = ["Source"]

Arrays = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Source:
    """Class names plus loaders for the raw splits present (``train``, ``test``, maybe ``val``)."""

    name: str
    classes: list[str]
    loaders: dict[str, Callable[[], Arrays]]
    groups: dict[str, Callable[[], torch.Tensor]] = field(default_factory=dict)
    """Per split, a loader of each sample's group id (e.g. a GTSRB track): carve-outs never split a group."""

    def split(self, split: str, labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted ``(kept, carved)`` indices of ``split`` (labels ``labels``): ``group_split`` when the split has
        group ids, else ``stratified_split``."""
        if split in self.groups:
            return group_split(labels, self.groups[split](), fraction, seed)
        return stratified_split(labels, fraction, seed)

    def load(self, split: str) -> Arrays:
        """Raw split ``split`` as (uint8 N×C×H×W, int64 N), with labels checked against ``classes``."""
        if split not in self.loaders:
            hint = ("; carve one from the training data with data.test_fraction (--test-fraction for evaluate)"
                    if split == "test" and "train" in self.loaders else "")
            raise UserError(f"dataset {self.name} has no {split!r} split (it has: {', '.join(sorted(self.loaders))})"
                            f"{hint}")
        x, y = self.loaders[split]()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise UserError(f"dataset {self.name} ({split}) has labels outside 0..{len(self.classes) - 1}; "
                            f"fix the labels or list every class name")
        return x, y

    def _index(self, item: int | str) -> int:
        """The label of one ``data.classes`` entry: an integer is an index, a string a class name."""
        if isinstance(item, str) and item in self.classes:
            return self.classes.index(item)
        if isinstance(item, int) and 0 <= item < len(self.classes):
            return item
        shown = ", ".join(f"{i}={c}" for i, c in enumerate(self.classes[:20]))
        more = f", ... ({len(self.classes)} classes)" if len(self.classes) > 20 else ""
        what = f"class index {item}" if isinstance(item, int) else f"class {item!r}"
        raise UserError(f"data.classes (--classes): dataset {self.name} has no {what} (it has {shown}{more}); give "
                        f"class names or indices 0..{len(self.classes) - 1}")

    def select(self, classes: Sequence[int | str]) -> "Source":
        """Only the samples of ``classes`` (indices or names), relabelled 0..k-1 in the given order, in every split."""
        index = [self._index(c) for c in classes]
        if not index or len(set(index)) < len(index):
            raise UserError(f"data.classes (--classes) must name distinct classes of {self.name}, got {list(classes)}")
        relabel = torch.full((len(self.classes),), -1, dtype=torch.int64)
        relabel[index] = torch.arange(len(index))

        def load(split: str) -> Arrays:
            x, y = self.load(split)
            keep = torch.nonzero(relabel[y] >= 0).flatten()
            return x[keep], relabel[y[keep]]

        def groups(split: str) -> torch.Tensor:
            return self.groups[split]()[relabel[self.load(split)[1]] >= 0]

        return Source(self.name, [self.classes[i] for i in index],
                      {split: functools.partial(load, split) for split in self.loaders},
                      {split: functools.partial(groups, split) for split in self.groups})

    def carve_test(self, fraction: float, seed: int) -> "Source":
        """A ``test`` split drawn from ``train`` (class-stratified ``fraction``, ``seed``: see ``stratified_split``)
        and ``train`` without it, so every later split (the val carve-out included) is disjoint from test."""
        if "test" in self.loaders:
            raise UserError(f"data.test_fraction carves a test split from the training data, but {self.name} has a "
                            f"test split of its own; remove data.test_fraction (--test-fraction) to use it")
        if "train" not in self.loaders:
            raise UserError(f"data.test_fraction carves a test split from the training data, but {self.name} has no "
                            f"train split (it has: {', '.join(sorted(self.loaders))})")

        def indices(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x, y = self.load("train")
            train, test = self.split("train", y, fraction, seed)
            return x, y, test if split == "test" else train

        def load(split: str) -> Arrays:
            x, y, idx = indices(split)
            return x[idx], y[idx]

        def groups(split: str) -> torch.Tensor:
            return self.groups["train"]()[indices(split)[2]]

        carved = {split: functools.partial(load, split) for split in ("train", "test")}
        carved_groups = {split: functools.partial(groups, split) for split in ("train", "test")
                         if "train" in self.groups}
        return Source(self.name, self.classes, {**self.loaders, **carved}, {**self.groups, **carved_groups})
