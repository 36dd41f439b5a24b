"""A dataset as found on disk: its class names and raw splits, each loaded only when asked for."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import UserError

__all__ = ["Source"]

Arrays = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Source:
    """Class names plus loaders for the raw splits present (``train``, ``test``, maybe ``val``)."""

    name: str
    classes: list[str]
    loaders: dict[str, Callable[[], Arrays]]

    def load(self, split: str) -> Arrays:
        """Raw split ``split`` as (uint8 N×C×H×W, int64 N), with labels checked against ``classes``."""
        if split not in self.loaders:
            raise UserError(f"dataset {self.name} has no {split!r} split (it has: {', '.join(sorted(self.loaders))})")
        x, y = self.loaders[split]()
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
            raise UserError(f"dataset {self.name} ({split}) has labels outside 0..{len(self.classes) - 1}; "
                            f"fix the labels or list every class name")
        return x, y
