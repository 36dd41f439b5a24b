"""The in-memory dataset every loader returns: one uint8 image tensor plus int64 labels."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from ..errors import UserError, warn

__all__ = ["ArrayDataset", "check_training_classes", "to_device"]


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; from host memory to a GPU through pinned memory with an asynchronous copy (it orders
    before any later use of the result on the current stream)."""
    device = torch.device(device)
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass(eq=False)
class ArrayDataset:
    """Images ``x`` (uint8, N×C×H×W, contiguous), labels ``y`` (int64, N), class names and a short dataset name."""

    x: torch.Tensor = field(repr=False)
    y: torch.Tensor = field(repr=False)
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"x must be uint8 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != self.x.shape[:1]:
            raise ValueError(f"y must be int64 of shape ({self.x.shape[0]},), got {self.y.dtype} {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``), which may exceed the labels actually present."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> "ArrayDataset":
        """A copy with ``x`` and ``y`` on ``device`` (no copy when already there; ``to_device`` from the host)."""
        return replace(self, x=to_device(self.x, device), y=to_device(self.y, device))

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "ArrayDataset":
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.int64, device=self.x.device)
        return replace(self, x=self.x[idx], y=self.y[idx])


def check_training_classes(train: ArrayDataset) -> None:
    """Refuse training data with fewer than 2 classes present (a 1-class head is always right, so its accuracy
    means nothing); warn about classes without a training image (their outputs are trained only to be low)."""
    counts = torch.bincount(train.y.cpu(), minlength=train.num_classes).tolist()
    present = [c for c, n in zip(train.classes, counts) if n]
    if len(present) < 2:
        raise UserError(f"the training data of {train.name} has {len(present)} class{'es' * (len(present) != 1)}"
                        f"{' (' + present[0] + ')' if present else ''}: a classifier needs at least 2 (with one, "
                        f"every prediction is right); add the other classes' images or fix the labels")
    if empty := [c for c, n in zip(train.classes, counts) if not n]:
        shown = ", ".join(empty[:10]) + (f", ... ({len(empty)} in all)" if len(empty) > 10 else "")
        warn(f"{len(empty)} of the {train.num_classes} classes of {train.name} have no training image ({shown}): "
             f"the head still gets an output for each; check the labels, or keep only the others with data.classes")
