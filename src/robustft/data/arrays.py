"""``.npz`` datasets: ``x`` uint8 N×H×W×C (or N×H×W) and integer ``y``, the split taken from the file name."""

import functools
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .source import Arrays, Source

__all__ = ["npz_source"]

NPZ_SPLITS = ("train", "val", "test")  # test*.npz -> test, train*.npz -> train, val*.npz -> val


def _split_of(path: Path) -> str | None:
    """The split a file name announces (``train_subset20k.npz`` -> ``train``), or None."""
    return next((s for s in NPZ_SPLITS if path.name.lower().startswith(s)), None)


def _read(path: Path, key: str) -> np.ndarray:
    """Array ``key`` of an npz file (only that member is decompressed); pickled objects are refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if key not in data:
                raise UserError(f"{path} has no array {key!r} (it has {', '.join(data.files)}); "
                                f"save images as 'x' (uint8 N×H×W×C) and labels as 'y'")
            return data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as an .npz file ({e}); re-create it with np.savez") from e


def _labels(path: Path) -> np.ndarray:
    """The ``y`` of one file, checked to be non-negative integers."""
    y = _read(path, "y")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise UserError(f"{path}: 'y' must be a 1-D array of non-negative integer labels, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _images(path: Path, count: int) -> np.ndarray:
    """The ``x`` of one file as N×C×H×W uint8, checked against the label count."""
    x = _read(path, "x")
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise UserError(f"{path}: 'x' must be uint8 N×H×W×C or N×H×W, got {x.dtype} {x.shape}; "
                        f"convert it with x.astype(np.uint8) (pixel values 0..255)")
    if len(x) != count:
        raise UserError(f"{path} has {len(x)} images but {count} labels; 'x' and 'y' must have the same length")
    return (x[..., None] if x.ndim == 3 else x).transpose(0, 3, 1, 2)


def _load(files: list[Path], labels: list[np.ndarray]) -> Arrays:
    """One split: its files' arrays concatenated in sorted file-name order."""
    images = [_images(f, len(y)) for f, y in zip(files, labels, strict=True)]
    if len({im.shape[1:] for im in images}) > 1:
        raise UserError(f"{', '.join(map(str, files))} hold images of different shapes; give them one shape")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _class_names(directory: Path, count: int) -> list[str]:
    """Names from ``classes.txt`` (line i = label i) when present, else "0", "1", ... for ``count`` classes."""
    listing = directory / "classes.txt"
    if not listing.is_file():
        return [str(i) for i in range(count)]
    names = listing.read_text().rstrip("\n").split("\n")
    if len(names) < count:
        raise UserError(f"{listing} lists {len(names)} classes but the labels go up to {count - 1}; "
                        f"add one line per class")
    return [n.strip() for n in names]


def npz_source(path: Path) -> Source:
    """One ``.npz`` file, or every ``train*``/``val*``/``test*`` ``.npz`` in a directory, split by file name."""
    files = [path] if path.is_file() else sorted(path.glob("*.npz"), key=lambda p: p.name)
    by_split: dict[str, list[Path]] = {}
    for f in files:
        if (split := _split_of(f)) is not None:
            by_split.setdefault(split, []).append(f)
    if not by_split:
        raise UserError(f"no train*.npz, val*.npz or test*.npz found at {path}; name each file after its split")
    labels = {split: [_labels(f) for f in fs] for split, fs in by_split.items()}
    count = 1 + max((int(y.max()) for ys in labels.values() for y in ys if y.size), default=-1)
    directory = path.parent if path.is_file() else path
    return Source(name=directory.resolve().name, classes=_class_names(directory, count),
                  loaders={split: functools.partial(_load, fs, labels[split]) for split, fs in by_split.items()})
