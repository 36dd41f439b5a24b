"""A decoded, packed split on disk, for data larger than memory: written once, then read a batch at a time.

The store is a directory of two standard NumPy files: ``pixels.npy`` (the flat uint8 buffer of
:class:`PackedImages`, loadable with ``np.load(..., mmap_mode="r")``) and ``index.npz`` (offsets, sizes, labels). It is
written into a temporary directory, pixels streamed as they are decoded, and renamed into place, so a killed write
leaves nothing that is read back. Batches are read with ``os.preadv`` of each image's byte range rather than through
a memory map, so what a run holds is its batches, never the pages of the whole file it has touched.
"""

import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .packed import PackedImages
from .paths import default_cache_dir

__all__ = ["DiskImages", "STORE_VERSION", "open_store", "store_dir", "write_store"]

STORE_VERSION = 1  # part of every store's key: bump it when the layout changes
HEADER = 128  # bytes reserved for pixels.npy's header, written last (a 1-D uint8 header takes 128 for any length)


def store_dir(key: tuple) -> Path:
    """Where the store of ``key`` (the source's fingerprint, split and storage size) lives in the cache."""
    digest = hashlib.sha256(repr((STORE_VERSION, *key)).encode()).hexdigest()[:32]
    return default_cache_dir() / "stores" / digest


def _header(length: int) -> bytes:
    """The ``.npy`` header of a flat uint8 array of ``length``, padded to exactly ``HEADER`` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": (length,)})
    header = buffer.getvalue()
    if len(header) != HEADER:
        raise ValueError(f"unexpected .npy header length {len(header)}")
    return header


def write_store(path: Path, images: Iterable[np.ndarray], labels: torch.Tensor) -> None:
    """Stream H×W×3 uint8 ``images`` into a store at ``path``, atomically: a temporary sibling renamed when done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        sizes = []
        with open(tmp / "pixels.npy", "wb") as f:
            f.write(bytes(HEADER))
            for image in images:
                sizes.append(image.shape[:2])
                f.write(np.ascontiguousarray(image, dtype=np.uint8).data)
            areas = np.array(sizes, dtype=np.int64).reshape(-1, 2).prod(1)
            f.seek(0)
            f.write(_header(int(areas.sum()) * 3))
            f.flush()
            os.fsync(f.fileno())
        np.savez(tmp / "index.npz", offsets=np.cumsum(areas) - areas, sizes=np.array(sizes, np.int64).reshape(-1, 2),
                 labels=labels.numpy())
        try:
            tmp.rename(path)
        except OSError:
            if not (path / "index.npz").is_file():  # lost a race to another process writing the same store: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_store(path: Path) -> tuple["DiskImages", torch.Tensor] | None:
    """The store at ``path`` as (images on disk, labels), or None when there is none (or it is unreadable)."""
    try:
        with np.load(path / "index.npz") as index:
            offsets, sizes, labels = (torch.from_numpy(index[k].copy()) for k in ("offsets", "sizes", "labels"))
        pixels = np.load(path / "pixels.npy", mmap_mode="r")  # checks the header; nothing is read
    except (OSError, ValueError, KeyError):
        return None
    if pixels.shape != (int((sizes.prod(1)).sum()) * 3,) or len(offsets) != len(labels):
        return None
    return DiskImages(path / "pixels.npy", offsets, sizes), labels


@dataclass(eq=False)
class DiskImages:
    """Packed images in a store's ``pixels.npy``: selections are free, ``read`` loads a batch of them."""

    path: Path
    offsets: torch.Tensor = field(repr=False)  # int64 N, in pixels from the start of the buffer
    sizes: torch.Tensor = field(repr=False)  # int64 N×2
    device: torch.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.offsets.shape[0]

    def __getitem__(self, idx: torch.Tensor | slice) -> "DiskImages":
        """The images at ``idx``, still on disk."""
        return DiskImages(self.path, self.offsets[idx], self.sizes[idx], self.device)

    @property
    def nbytes(self) -> int:
        """Bytes of pixels these images cover."""
        return int(self.sizes.prod(1).sum()) * 3

    def to(self, device: torch.device | str) -> "DiskImages":
        """The same images, read onto ``device`` from now on."""
        return DiskImages(self.path, self.offsets, self.sizes, torch.device(device))

    def read(self, idx: torch.Tensor | slice) -> PackedImages:
        """The images at ``idx`` in memory, packed, on this store's device (one ``preadv`` per image)."""
        offsets, sizes = self.offsets[idx], self.sizes[idx]
        lengths = (sizes.prod(1) * 3).tolist()
        out = np.empty(sum(lengths), np.uint8)
        view = memoryview(out)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            at = 0
            for start, length in zip((offsets * 3 + HEADER).tolist(), lengths):
                done = 0
                while done < length:  # straight into the batch buffer: no per-image bytes object
                    read = os.preadv(fd, [view[at + done:at + length]], start + done)
                    if read == 0:
                        raise UserError(f"the decoded store {self.path} is shorter than its index; delete "
                                        f"{self.path.parent} to rebuild it")
                    done += read
                at += length
        finally:
            os.close(fd)
        areas = sizes.prod(1)
        return PackedImages(torch.from_numpy(out).to(self.device), torch.cumsum(areas, 0) - areas, sizes)

    def load(self) -> PackedImages:
        """All of these images in memory."""
        return self.read(slice(None))
