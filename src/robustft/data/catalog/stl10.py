"""STL-10's labelled splits from the official binaries (``stl10_binary/{train,test}_{X,y}.bin``); the unlabelled
100k images are not loaded."""

import functools
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ..download import Remote
from ..source import Arrays, Source
from .base import Card, Options, fetch, read_lines

__all__ = ["STL10"]

STL10_REMOTE = Remote("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "91f7769df0f17e558f3565bffb0c7dfb")
_SIDE = 96


def _split(folder: Path, split: str, classes: int) -> Arrays:
    """``<split>_X.bin``: uint8 images, each 3 planes of 96×96 stored column-major; ``<split>_y.bin``: 1..10."""
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    x = np.fromfile(x_path, dtype=np.uint8)
    y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    if x.size != len(y) * 3 * _SIDE * _SIDE or (len(y) and (y.min() < 0 or y.max() >= classes)):
        raise UserError(f"{x_path} / {y_path} are not official STL-10 files ({x.size} bytes of images for "
                        f"{len(y)} labels); delete them and download the dataset again")
    images = x.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2)  # column-major planes -> row-major
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(y)


def stl10(opts: Options) -> Source:
    """STL-10 (10 classes, 96×96) from ``<root>/stl10/stl10_binary``: the official train (5000) and test (8000)."""
    folder = opts.root / "stl10"
    names = ["class_names.txt", *(f"{s}_{k}.bin" for s in ("train", "test") for k in ("X", "y"))]
    fetch(folder, "STL-10", {STL10_REMOTE: [f"stl10_binary/{n}" for n in names]}, opts.download)
    base = folder / "stl10_binary"
    classes = read_lines(base / "class_names.txt")
    return Source("stl10", classes, {split: functools.partial(_split, base, split, len(classes))
                                     for split in ("train", "test")})


STL10 = Card("stl10", "STL-10 (labelled)", 10, {"train": 5000, "test": 8000},
             "https://cs.stanford.edu/~acoates/stl10/", "ImageNet terms (images from ImageNet)",
             "official train / test binaries (unlabelled split not used); val carved from train", stl10)
