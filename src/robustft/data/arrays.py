"""``.npz`` datasets: uint8 images N×H×W×C (or N×H×W) and integer labels, the split taken from the file name.

The arrays are ``x`` and ``y`` unless ``x_key`` / ``y_key`` (``data.x_key`` / ``data.y_key``) name others; without
them and without ``x``/``y``, the file's only uint8 N×H×W(×C) array and only 1-D integer array of that length are
used, judged from the ``.npy`` headers, and anything ambiguous is refused with the arrays found. Channels-first
images (N×C×H×W) are recognised and accepted with a warning. Before any member is read, its decompressed size
(and the size its header announces) is checked against ``DecodeLimits.max_array_mb``, each image's pixels against
``max_image_pixels`` and the largest label + 1 against ``max_classes``, so a small file cannot fill memory.
A 1-D integer array of per-sample group ids (``group_key``, default the first of ``GROUP_KEYS`` present, e.g.
GTSRB's ``track``) makes the validation carve-out group-aware: frames of one track never land on both sides.
"""

import functools
import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, warn
from .limits import DecodeLimits
from .readers import open_regular, read_text
from .source import Arrays, Source

__all__ = ["npz_source"]

GROUP_KEYS = ("groups", "group", "tracks", "track")  # default group-id arrays, first present wins
NPZ_SPLITS = ("train", "val", "test")  # test*.npz -> test, train*.npz -> train, val*.npz -> val
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _split_of(path: Path) -> str | None:
    """The split a file name announces (``train_subset20k.npz`` -> ``train``), or None."""
    return next((s for s in NPZ_SPLITS if path.name.lower().startswith(s)), None)


@dataclass(frozen=True)
class _Member:
    """One array of an npz file as its zip entry and ``.npy`` header describe it (no data decompressed)."""

    size: int  # decompressed bytes
    dtype: np.dtype | None  # None: not a .npy header this module reads
    shape: tuple[int, ...] | None

    def describe(self) -> str:
        """``uint8 60000×28×28``, or ``unreadable header``."""
        return "unreadable header" if self.dtype is None else f"{self.dtype} {'×'.join(map(str, self.shape))}"

    @property
    def nbytes(self) -> int:
        """The bytes its header announces (what numpy allocates before reading), 0 for an unreadable header."""
        return 0 if self.dtype is None else math.prod(self.shape) * self.dtype.itemsize


def _describe(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    """The header of one member (numpy's bounded header parser: a literal, never code)."""
    with archive.open(info) as f:
        try:
            reader = _HEADER_READERS.get(np.lib.format.read_magic(f))
            shape, _, dtype = reader(f) if reader else (None, None, None)
        except ValueError:  # not an .npy member
            shape, dtype = None, None
    return _Member(size=info.file_size, dtype=dtype, shape=shape)


def _members(path: Path) -> dict[str, _Member]:
    """Every array of an npz file by key (``np.savez`` adds ``.npy`` to each key's member name)."""
    try:
        with open_regular(path) as f, zipfile.ZipFile(f) as archive:  # also keeps np.load from reading a .npy
            return {info.filename.removesuffix(".npy"): _describe(archive, info) for info in archive.infolist()}
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as e:  # zlib: a damaged member's header
        raise UserError(f"cannot read {path} as an .npz file ({e}); re-create it with np.savez") from e


def _choose(path: Path, members: dict[str, _Member], given: str | None, default: str, what: str, key: str,
            fits: Callable[[_Member], bool]) -> str:
    """The key of the images or labels: ``given``, else ``default`` when present, else the only array that fits."""
    if given in members or (given is None and default in members):
        return given or default
    candidates = [] if given is not None else [k for k, m in members.items() if m.dtype is not None and fits(m)]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(f"{k} ({m.describe()})" for k, m in members.items()) or "no arrays"
    problem = (f"has no array {given!r}" if given is not None else
               f"has no array {default!r} and {len(candidates) or 'no'} arrays that could be the {what}")
    raise UserError(f"{path} {problem} (it has {found}); name the {what} with data.{key}=KEY "
                    f"(--{key.replace('_', '-')} KEY for evaluate and mrc)")


def _keys(path: Path, members: dict[str, _Member], x_key: str | None, y_key: str | None) -> tuple[str, str]:
    """(images key, labels key) of one file."""
    x = _choose(path, members, x_key, "x", "images", "x_key",
                lambda m: m.dtype == np.uint8 and len(m.shape) in (3, 4))
    count = members[x].shape[0] if members[x].shape else None
    y = _choose(path, {k: m for k, m in members.items() if k != x}, y_key, "y", "labels", "y_key",
                lambda m: m.dtype.kind in "iu" and m.shape == (count,))
    return x, y


def _layout(shape: tuple[int, ...]) -> str | None:
    """How images of this array shape are laid out: ``NHW``, ``NHWC`` or ``NCHW`` (C = 1 or 3), else None."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC"
    return "NCHW" if len(shape) == 4 and shape[1] in (1, 3) else None


def _read(path: Path, key: str, member: _Member, limits: DecodeLimits) -> np.ndarray:
    """Array ``key`` of an npz file (only that member is decompressed, after its size check); no pickles."""
    limits.check_array(f"{path}: array {key!r}", max(member.size, member.nbytes))
    try:
        with open_regular(path) as f, np.load(f, allow_pickle=False) as data:
            return data[key]
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot read {path} as an .npz file ({e}); re-create it with np.savez") from e


@dataclass(frozen=True)
class _NpzFile:
    """One ``.npz`` file with the keys of its images and labels."""

    path: Path
    members: dict[str, _Member]
    x: str
    y: str

    @classmethod
    def open(cls, path: Path, x_key: str | None, y_key: str | None) -> "_NpzFile":
        """Describe ``path`` and choose its keys (see the module docstring)."""
        members = _members(path)
        return cls(path, members, *_keys(path, members, x_key, y_key))

    def labels(self, limits: DecodeLimits) -> np.ndarray:
        """The labels, checked to be non-negative integers implying at most ``limits.max_classes`` classes."""
        y = _read(self.path, self.y, self.members[self.y], limits)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise UserError(f"{self.path}: {self.y!r} must be a 1-D array of non-negative integer labels, got "
                            f"{y.dtype} {y.shape}")
        if y.size:  # before int64 (a uint64 label >= 2**63 would wrap negative) and before any class name is made
            top = int(y.max())
            limits.check_classes(f"{self.path}: the class count its labels {self.y!r} imply (largest label {top} "
                                 f"+ 1)", top + 1)
        return y.astype(np.int64)

    def images(self, count: int, limits: DecodeLimits) -> np.ndarray:
        """The images as N×C×H×W uint8 (C = 1 or 3), checked against the label count."""
        path, key, member = self.path, self.x, self.members[self.x]
        if member.dtype == np.uint8 and (layout := _layout(member.shape)) is not None:
            # checked on the header: numpy allocates the whole array before it reads any of it
            height, width = member.shape[2:4] if layout == "NCHW" else member.shape[1:3]
            if height * width == 0:
                raise UserError(f"{path}: {key!r} {member.shape} holds images of {width}x{height} pixels; save images "
                                f"of at least 1x1 pixel")
            limits.check_pixels(f"{path}: each image of {key!r}", width, height)
        x = _read(path, key, member, limits)
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise UserError(f"{path}: {key!r} must be uint8 N×H×W×C or N×H×W, got {x.dtype} {x.shape}; "
                            f"convert it with x.astype(np.uint8) (pixel values 0..255)")
        if len(x) != count:
            raise UserError(f"{path} has {len(x)} images but {count} labels; {key!r} and {self.y!r} must have the "
                            f"same length")
        layout = _layout(x.shape)
        if layout == "NHW":
            return x[:, None]
        if layout == "NHWC":
            return x.transpose(0, 3, 1, 2)
        if layout == "NCHW":
            warn(f"{path}: {key!r} {tuple(x.shape)} looks channels-first (N×C×H×W), not N×H×W×C; reading it as "
                 f"N×C×H×W (save it with x.transpose(0, 2, 3, 1) to silence this)")
            return x  # already the N×C×H×W that the loader returns
        raise UserError(f"{path}: {key!r} {tuple(x.shape)} has neither 1 nor 3 channels in N×H×W×C (or N×C×H×W) "
                        f"layout; save images as uint8 N×H×W×C with C = 3 (RGB) or 1 (grayscale), or N×H×W")


def _load(files: list[_NpzFile], labels: list[np.ndarray], limits: DecodeLimits) -> Arrays:
    """One split: its files' arrays concatenated in sorted file-name order."""
    images = [f.images(len(y), limits) for f, y in zip(files, labels, strict=True)]
    if len({im.shape[1:] for im in images}) > 1:
        raise UserError(f"{', '.join(str(f.path) for f in files)} hold images of different shapes; give them one "
                        f"shape")
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _class_names(directory: Path, count: int, limits: DecodeLimits) -> list[str]:
    """Names from ``classes.txt`` (line i = label i) when present, else "0", "1", ... for ``count`` classes."""
    listing = directory / "classes.txt"
    if not listing.exists():
        return [str(i) for i in range(count)]
    try:
        text = read_text(listing, limits).rstrip("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {listing} ({e}); save it as UTF-8 text, one class name per line") from None
    limits.check_classes(f"{listing}: the number of lines", text.count("\n") + 1)
    names = text.split("\n")
    if len(names) < count:
        raise UserError(f"{listing} lists {len(names)} classes but the labels go up to {count - 1}; "
                        f"add one line per class")
    return [n.strip() for n in names]


def _groups(files: list[_NpzFile], labels: list[np.ndarray], key: str, limits: DecodeLimits) -> torch.Tensor:
    """The group ids of one split, concatenated like its images (checked: 1-D integers, one per label)."""
    out = []
    for f, y in zip(files, labels, strict=True):
        g = _read(f.path, key, f.members[key], limits)
        if g.shape != y.shape or not np.issubdtype(g.dtype, np.integer):
            raise UserError(f"{f.path}: group array {key!r} must be 1-D integers, one per label ({len(y)}), got "
                            f"{g.dtype} {g.shape}; fix it or name another with data.group_key")
        out.append(g.astype(np.int64))
    return torch.from_numpy(np.concatenate(out))


def _group_key(files: list[_NpzFile], given: str | None) -> str | None:
    """The group-id array these files share: ``given`` (every file must hold it), else the first of
    ``GROUP_KEYS`` that every file holds, else None."""
    if given is not None:
        missing = [str(f.path) for f in files if given not in f.members]
        if missing:
            raise UserError(f"data.group_key={given!r}: {', '.join(missing)} hold(s) no such array; name an array "
                            f"of per-sample group ids or remove data.group_key")
        return given
    return next((k for k in GROUP_KEYS if all(k in f.members for f in files)), None)


def npz_source(path: Path, limits: DecodeLimits, x_key: str | None, y_key: str | None,
               group_key: str | None) -> Source:
    """One ``.npz`` file, or every ``train*``/``val*``/``test*`` ``.npz`` in a directory, split by file name; a single
    file whose name announces no split is the training data (carve a test split from it with ``test_fraction``).
    The training files' group ids (``group_key``, see the module docstring) make every carve-out from train
    group-aware."""
    if not path.is_dir():
        named = {_split_of(path) or "train": [path]}
    else:
        named = {}
        for f in sorted(path.glob("*.npz"), key=lambda p: p.name):
            if (split := _split_of(f)) is not None:
                named.setdefault(split, []).append(f)
    if not named:
        raise UserError(f"no train*.npz, val*.npz or test*.npz found at {path}; name each file after its split")
    by_split = {split: [_NpzFile.open(f, x_key, y_key) for f in fs] for split, fs in named.items()}
    labels = {split: [f.labels(limits) for f in fs] for split, fs in by_split.items()}
    count = 1 + max((int(y.max()) for ys in labels.values() for y in ys if y.size), default=-1)
    directory = path if path.is_dir() else path.parent
    train = by_split.get("train", [])
    key = _group_key(train, group_key) if train else None
    if group_key is not None and key is None:
        raise UserError(f"data.group_key={group_key!r} groups the training data, but {path} has none; remove it")
    return Source(name=directory.resolve().name, classes=_class_names(directory, count, limits),
                  loaders={split: functools.partial(_load, fs, labels[split], limits)
                           for split, fs in by_split.items()},
                  groups={"train": functools.partial(_groups, train, labels["train"], key, limits)} if key else {})
