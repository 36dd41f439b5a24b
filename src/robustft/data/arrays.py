"""``.npz`` datasets: ``x`` uint8 N×H×W×C (or N×H×W) and integer ``y``, the split taken from the file name.

Channels-first ``x`` (N×C×H×W) is recognised and accepted with a warning; every member's decompressed size is
checked against ``DecodeLimits.max_array_mb`` before it is read.
"""

import functools
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, warn
from .limits import DecodeLimits
from .source import Arrays, Source

__all__ = ["npz_source"]

NPZ_SPLITS = ("train", "val", "test")  # test*.npz -> test, train*.npz -> train, val*.npz -> val


def _split_of(path: Path) -> str | None:
    """The split a file name announces (``train_subset20k.npz`` -> ``train``), or None."""
    return next((s for s in NPZ_SPLITS if path.name.lower().startswith(s)), None)


def _read(path: Path, key: str, limits: DecodeLimits) -> np.ndarray:
    """Array ``key`` of an npz file (only that member is decompressed, after its size check); no pickles."""
    try:
        with zipfile.ZipFile(path) as archive:  # also keeps np.load from reading a whole .npy named *.npz
            sizes = {info.filename: info.file_size for info in archive.infolist()}
        with np.load(path, allow_pickle=False) as data:
            if key not in data:
                raise UserError(f"{path} has no array {key!r} (it has {', '.join(data.files)}); "
                                f"save images as 'x' (uint8 N×H×W×C) and labels as 'y'")
            member = f"{key}.npy" if f"{key}.npy" in sizes else key  # np.savez always adds .npy
            limits.check_array(f"{path}: array {key!r}", sizes[member])
            return data[key]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as an .npz file ({e}); re-create it with np.savez") from e


def _labels(path: Path, limits: DecodeLimits) -> np.ndarray:
    """The ``y`` of one file, checked to be non-negative integers."""
    y = _read(path, "y", limits)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise UserError(f"{path}: 'y' must be a 1-D array of non-negative integer labels, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _images(path: Path, count: int, limits: DecodeLimits) -> np.ndarray:
    """The ``x`` of one file as N×C×H×W uint8 (C = 1 or 3), checked against the label count."""
    x = _read(path, "x", limits)
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise UserError(f"{path}: 'x' must be uint8 N×H×W×C or N×H×W, got {x.dtype} {x.shape}; "
                        f"convert it with x.astype(np.uint8) (pixel values 0..255)")
    if len(x) != count:
        raise UserError(f"{path} has {len(x)} images but {count} labels; 'x' and 'y' must have the same length")
    if x.ndim == 3:
        return x[:, None]
    if x.shape[3] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    if x.shape[1] in (1, 3):
        warn(f"{path}: 'x' {tuple(x.shape)} looks channels-first (N×C×H×W), not N×H×W×C; reading it as N×C×H×W "
             f"(save it with x.transpose(0, 2, 3, 1) to silence this)")
        return x  # already the N×C×H×W that the loader returns
    raise UserError(f"{path}: 'x' {tuple(x.shape)} has neither 1 nor 3 channels in N×H×W×C (or N×C×H×W) layout; "
                    f"save images as uint8 N×H×W×C with C = 3 (RGB) or 1 (grayscale), or N×H×W")


def _load(files: list[Path], labels: list[np.ndarray], limits: DecodeLimits) -> Arrays:
    """One split: its files' arrays concatenated in sorted file-name order."""
    images = [_images(f, len(y), limits) for f, y in zip(files, labels, strict=True)]
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


def npz_source(path: Path, limits: DecodeLimits = DecodeLimits()) -> Source:
    """One ``.npz`` file, or every ``train*``/``val*``/``test*`` ``.npz`` in a directory, split by file name."""
    files = [path] if path.is_file() else sorted(path.glob("*.npz"), key=lambda p: p.name)
    by_split: dict[str, list[Path]] = {}
    for f in files:
        if (split := _split_of(f)) is not None:
            by_split.setdefault(split, []).append(f)
    if not by_split:
        raise UserError(f"no train*.npz, val*.npz or test*.npz found at {path}; name each file after its split")
    labels = {split: [_labels(f, limits) for f in fs] for split, fs in by_split.items()}
    count = 1 + max((int(y.max()) for ys in labels.values() for y in ys if y.size), default=-1)
    directory = path.parent if path.is_file() else path
    return Source(name=directory.resolve().name, classes=_class_names(directory, count),
                  loaders={split: functools.partial(_load, fs, labels[split], limits)
                           for split, fs in by_split.items()})
