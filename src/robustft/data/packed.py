"""Images of different sizes in one uint8 buffer, and the dataset that serves their views as batches."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError
from .dataset import ArrayDataset
from .views import Boxes, View

if TYPE_CHECKING:
    from .store import DiskImages

__all__ = ["PackedDataset", "PackedImages"]


@dataclass(eq=False)
class PackedImages:
    """H×W×3 uint8 images back to back in ``pixels`` (flat), image ``i`` at pixel ``offsets[i]`` of size ``sizes[i]``.

    Indexing selects images without copying the buffer, so class subsets and splits of a store are free.
    """

    pixels: torch.Tensor = field(repr=False)
    offsets: torch.Tensor = field(repr=False)  # int64 N, in pixels (bytes / 3), on the CPU
    sizes: torch.Tensor = field(repr=False)  # int64 N×2: height, width, on the CPU

    def __post_init__(self) -> None:
        if self.pixels.dtype != torch.uint8 or self.pixels.dim() != 1 or self.pixels.numel() % 3:
            raise ValueError(f"pixels must be a flat uint8 buffer of RGB pixels, got {self.pixels.dtype} "
                             f"{tuple(self.pixels.shape)}")
        if self.offsets.shape != self.sizes.shape[:1] or self.sizes.shape[1:] != (2,):
            raise ValueError(f"offsets (N,) and sizes (N, 2) disagree: {tuple(self.offsets.shape)} vs "
                             f"{tuple(self.sizes.shape)}")

    @classmethod
    def pack(cls, images: Sequence[np.ndarray | torch.Tensor]) -> "PackedImages":
        """Pack H×W×3 uint8 images (arrays or CPU tensors) in order, into one new buffer."""
        sizes = torch.tensor([tuple(im.shape[:2]) for im in images], dtype=torch.int64).reshape(-1, 2)
        areas = sizes.prod(1)
        offsets = torch.cumsum(areas, 0) - areas
        pixels = np.concatenate([np.asarray(im, dtype=np.uint8).reshape(-1) for im in images]) if images else []
        return cls(torch.as_tensor(pixels, dtype=torch.uint8), offsets, sizes)

    @classmethod
    def from_arrays(cls, x: torch.Tensor) -> "PackedImages":
        """Same-size images, uint8 N×3×H×W, packed as they are."""
        n, _, h, w = x.shape
        return cls(x.permute(0, 2, 3, 1).reshape(-1).contiguous(), torch.arange(n, dtype=torch.int64) * h * w,
                   torch.tensor([[h, w]], dtype=torch.int64).expand(n, 2).contiguous())

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def __getitem__(self, idx: torch.Tensor | slice) -> "PackedImages":
        """The images at ``idx`` (an index tensor or a slice), sharing this buffer."""
        return PackedImages(self.pixels, self.offsets[idx], self.sizes[idx])

    def read(self, idx: torch.Tensor | slice) -> "PackedImages":
        """The images at ``idx``, ready to crop (already in memory: the same as indexing)."""
        return self[idx]

    @property
    def device(self) -> torch.device:
        """Where the pixels live."""
        return self.pixels.device

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as an H×W×3 uint8 tensor (a view of the buffer)."""
        h, w = self.sizes[i].tolist()
        start = int(self.offsets[i]) * 3
        return self.pixels[start:start + h * w * 3].view(h, w, 3)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels these images cover (not the whole buffer when this is a selection)."""
        return int(self.sizes.prod(1).sum()) * 3

    def to(self, device: torch.device | str) -> "PackedImages":
        """These images on ``device`` (the index stays on the CPU); a selection is compacted first so only its own
        pixels move."""
        if torch.device(device) == self.pixels.device:
            return self
        images = self if self.nbytes == self.pixels.numel() else self.compact()
        return PackedImages(images.pixels.to(device), images.offsets, images.sizes)

    def compact(self) -> "PackedImages":
        """A copy holding only these images' pixels, in order."""
        return PackedImages.pack([self.image(i) for i in range(len(self))])


@dataclass(eq=False)
class PackedDataset:
    """Packed images at their aspect ratio, labels, classes and name, served through views of side ``size``.

    ``eval_view`` (the centre crop) is what evaluation sees; training passes its own random view to
    ``iterate_batches``. ``render`` turns the evaluation view into an ordinary :class:`ArrayDataset`.
    """

    images: "PackedImages | DiskImages" = field(repr=False)
    y: torch.Tensor = field(repr=False)
    classes: list[str]
    name: str
    size: int

    def __post_init__(self) -> None:
        if self.y.dtype != torch.int64 or self.y.shape != (len(self.images),):
            raise ValueError(f"y must be int64 of shape ({len(self.images)},), got {self.y.dtype} "
                             f"{tuple(self.y.shape)}")
        if len(self) and int(self.images.sizes.min()) < self.size:
            h, w = self.images.sizes[int(self.images.sizes.min(1).values.argmin())].tolist()
            raise UserError(f"dataset {self.name} has a {w}x{h} image, smaller than the {self.size}-pixel crop "
                            f"(data.image_size); store images larger (data.storage_size) or crop smaller")

    def __len__(self) -> int:
        return self.y.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        """Where the pixels (and labels) live, or are read to."""
        return self.images.device

    @property
    def eval_view(self) -> View:
        """Resize-then-centre-crop, the papers' evaluation view (the resize happened when the images were stored)."""
        return View("center_crop", self.size)

    def to(self, device: torch.device | str) -> "PackedDataset":
        """A copy with the pixels and labels on ``device``."""
        return replace(self, images=self.images.to(device), y=self.y.to(device))

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "PackedDataset":
        """The samples at ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.int64).cpu()
        return replace(self, images=self.images[idx], y=self.y[idx.to(self.y.device)])

    def prepare(self, idx: torch.Tensor | slice, view: View | None = None, generator: torch.Generator | None = None,
                shard: tuple[int, int] = (0, 1)) -> tuple[View, PackedImages, Boxes, torch.Tensor | None]:
        """Draw ``view`` (default: the evaluation view) for the global batch ``idx``, then read the images of this
        rank's share (``shard`` = (rank, world size): every ``world``-th sample from ``rank``) — what ``batch``
        crops; the part that may run ahead on another thread."""
        view = view or self.eval_view
        idx = idx.cpu() if isinstance(idx, torch.Tensor) else torch.arange(len(self))[idx]
        boxes, flips = view.draw(self.images.sizes[idx], generator)
        rank, world = shard
        if world > 1:
            idx, boxes, flips = idx[rank::world], boxes[rank::world], None if flips is None else flips[rank::world]
        return view, self.images.read(idx), boxes, flips

    def batch(self, idx: torch.Tensor | slice, view: View | None = None, generator: torch.Generator | None = None,
              shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """uint8 n×3×size×size: ``view`` of this rank's share of the samples at ``idx`` (see ``prepare``)."""
        return self.apply(self.prepare(idx, view, generator, shard))

    @staticmethod
    def apply(prepared: tuple[View, PackedImages, Boxes, torch.Tensor | None]) -> torch.Tensor:
        """Crop, resize and flip a prepared batch on its pixels' device."""
        view, images, boxes, flips = prepared
        return view.apply(images.pixels, images.offsets, images.sizes, boxes, flips)

    def render(self) -> ArrayDataset:
        """The evaluation view of every sample, as an in-memory :class:`ArrayDataset`."""
        x = torch.empty((len(self), 3, self.size, self.size), dtype=torch.uint8, device=self.device)
        for start in range(0, len(self), 256):
            x[start:start + 256] = self.batch(slice(start, start + 256))
        return ArrayDataset(x, self.y, self.classes, self.name)
