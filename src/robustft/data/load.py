"""``load_dataset``: one way to name a dataset (``cifar10``, a folder, a zip, an npz) and get a split of it."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .arrays import npz_source
from .catalog import CATALOG, CORRUPTIONS, Options
from .dataset import ArrayDataset
from .imagefolder import image_folder
from .limits import MB
from .packed import PackedDataset, PackedImages
from .store import DiskImages
from .paths import default_data_root
from .source import Arrays, Source
from .spec import DataSpec, data_spec
from .splits import SPLITS, subset_indices
from .transforms import resize

__all__ = ["NAMED_DATASETS", "default_memory_budget_mb", "load_dataset", "load_splits", "open_source"]

NAMED_DATASETS = CATALOG  # name -> Card (see ``robustft datasets``)
KINDS = ("imagefolder", "npz")  # explicit ``kind:PATH`` prefixes that override auto-detection


def default_memory_budget_mb() -> float:
    """Half of this machine's physical memory, in MB: what ``storage=auto`` holds in memory at most by default."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 / MB


def _named_root(root: str | Path | None) -> Path:
    """The data root for named datasets; one given explicitly (argument or ``$ROBUSTFT_DATA``) must exist."""
    explicit = root is not None or bool(os.environ.get("ROBUSTFT_DATA"))
    path = Path(root).expanduser() if root is not None else default_data_root()
    if explicit and not path.is_dir():
        raise UserError(f"data root {path} does not exist; create it or pass an existing directory as root "
                        f"(or $ROBUSTFT_DATA)")
    return path


def _detect(path: Path) -> str:
    """``imagefolder`` or ``npz`` for an existing path, from its suffix or, for a directory, its contents."""
    if path.is_dir():
        return "npz" if any(path.glob("*.npz")) else "imagefolder"
    if path.suffix.lower() in (".zip", ".npz"):
        return "imagefolder" if path.suffix.lower() == ".zip" else "npz"
    raise UserError(f"cannot tell what kind of dataset {path} is; pass an image-folder directory or .zip, "
                    f"an .npz file or directory, or prefix the path with imagefolder: or npz:")


def open_source(spec: DataSpec | str | os.PathLike, *, cache: bool = True, download: bool = True,
                **options: Any) -> Source:
    """Resolve ``spec`` (a :class:`DataSpec`, or a named dataset, a path, or ``imagefolder:``/``npz:`` + path, with
    ``options`` its DataSpec keys) to its :class:`Source`.

    The spec's limits bound what image folders and npz files may decode to; ``x_key`` / ``y_key`` name an npz file's
    arrays, ``group_key`` its per-sample group ids (see ``npz_source``); ``classes`` keeps those classes only
    (``Source.select``), then ``test_fraction`` carves a test split from train with ``split_seed``
    (``Source.carve_test``). ``storage_size`` keeps image folders' aspect ratios (shorter side resized to it) and packs
    them, held as ``storage`` says (``memory``, ``disk`` or ``auto``: memory when a split's pixels fit
    ``memory_budget_mb``, default half the machine's memory; see ``image_folder``). ``cache`` keeps decoded image
    folders on disk; ``download`` fetches a named dataset that is missing from the data root.
    """
    spec = data_spec(spec, **options)
    source = _open(spec, cache, download)
    if spec.classes is not None:
        source = source.select(spec.classes)
    return source if spec.test_fraction is None else source.carve_test(spec.test_fraction, spec.split_seed)


def _open(spec: DataSpec, cache: bool, download: bool) -> Source:
    """The source ``spec`` names, as stored."""
    name, limits = spec.name, spec.limits()
    budget = default_memory_budget_mb() if spec.memory_budget_mb is None else spec.memory_budget_mb
    named = name.lower() in NAMED_DATASETS
    if name.lower() in CORRUPTIONS:
        raise UserError(f"{name} is a corruption benchmark (test images per corruption and severity): evaluate on it "
                        f"with `robustft evaluate --corruptions all --corruption-dir {name.lower()}` and the clean "
                        f"dataset as --data")
    kind, sep, rest = name.partition(":")
    explicit = bool(sep) and kind in KINDS
    path = Path(rest if explicit else name).expanduser()
    if not named and not path.exists():
        raise UserError(f"dataset {name!r} is not one of {', '.join(NAMED_DATASETS)} and {path} does not exist; "
                        f"pass a dataset name or the path of an image folder, .zip or .npz")
    kind = "named" if named else kind if explicit else _detect(path)
    if kind != "npz" and (spec.x_key is not None or spec.y_key is not None or spec.group_key is not None):
        raise UserError(f"data.x_key / data.y_key / data.group_key (--x-key / --y-key) name the arrays of .npz data, "
                        f"but {name} is not .npz; remove them")
    if named:
        options = Options(_named_root(spec.root), download, spec.image_size, cache, limits, spec.storage_size,
                          spec.storage, budget)
        return NAMED_DATASETS[name.lower()].open(options)
    if kind == "npz":
        return npz_source(path, limits, spec.x_key, spec.y_key, spec.group_key)
    return image_folder(path, image_size=spec.image_size, cache=cache, limits=limits, storage_size=spec.storage_size,
                        storage=spec.storage, memory_budget_mb=budget)


def _split(source: Source, split: str, val_fraction: float, split_seed: int) -> Arrays:
    """Form ``split`` from the source's raw splits (see :func:`load_dataset`)."""
    explicit_val = "val" in source.loaders
    if split == "test" or (split == "val" and explicit_val):
        return source.load(split)
    if split == "val" and val_fraction == 0:
        raise UserError(f"dataset {source.name} has no val split of its own and val_fraction is 0; "
                        f"pass val_fraction > 0 (e.g. 0.1) to carve one out of train")
    x, y = source.load("train")
    if split == "train_full" or explicit_val:
        return x, y
    train, val = source.split("train", y, val_fraction, split_seed)
    idx = val if split == "val" else train
    return x[idx], y[idx]


def load_dataset(spec: DataSpec | str | os.PathLike, split: str = "test", *, n: int | None = None,
                 **options: Any) -> ArrayDataset | PackedDataset:
    """Load one split of a dataset into memory as uint8 images and int64 labels on ``device``.

    ``spec``: a :class:`DataSpec` (a run's ``data`` section), or what its ``name`` holds with ``options`` setting its
    other keys (``val_fraction=0.2``, ``root=...``, ``image_size=32``, ...; the rest keep DataSpec's defaults): a named
    dataset (``robustft datasets``: cifar10, caltech256, imagenet, ...; under ``root``, else
    ``default_data_root()``), or a path: an
    image-folder directory or ``.zip`` (``<split>/<class>/<image>``), an ``.npz`` file, or a directory of them.
    ``split``: ``test`` (the source's own, or with ``test_fraction`` a class-stratified fraction of its training
    data drawn with ``split_seed``, which every other split then excludes); ``train_full`` (all training data);
    ``val`` (the source's own val split, else a class-stratified ``val_fraction`` of train drawn with
    ``split_seed``); ``train`` (``train_full`` minus that carve-out, or all of it when the source has its own val).
    ``n`` keeps ``n`` evenly spaced samples of the split in canonical order. ``device``, ``cache``, ``download`` and
    ``resize_to`` are :func:`load_splits`'s.
    """
    return load_splits(spec, {split: n}, **options)[split]


def load_splits(spec: DataSpec | str | os.PathLike, splits: Mapping[str, int | None], *,
                device: torch.device | str = "cpu", cache: bool = True, download: bool = True,
                resize_to: tuple[int, int] | None = None, **options: Any) -> dict[str, ArrayDataset | PackedDataset]:
    """Several splits (name -> subset ``n`` or None, see :func:`load_dataset`) from one opening of the source, so
    the training data is decoded (or read from the cache) once for ``train`` and its ``val`` carve-out.

    ``classes`` (indices or names) keeps only those classes, relabelled 0..k-1 in that order, before any split is
    carved. ``image_size`` resizes every image to a square of that side (image folders at decode time with PIL,
    arrays with :func:`resize`); ``resize_to`` (height, width) resizes the loaded arrays instead (a non-square size).
    With ``storage_size``, image folders keep their
    aspect ratio instead (shorter side resized to ``storage_size``; arrays stay as they are) and each split is a
    :class:`PackedDataset` served through ``image_size`` crops: the centre crop for evaluation, a random view for
    training (see ``views``), its pixels held in memory or read from a store on disk as ``storage`` says
    (``memory``, ``disk``, or ``auto``: memory when they fit ``memory_budget_mb``; see ``image_folder``). ``cache``
    keeps decoded image folders on disk; ``download`` fetches a named dataset
    that is missing from the data root. The limits (``max_file_mb``, ...) are the file-size, pixel-count and
    array-size limits checked before image folders and npz files are decoded; ``x_key`` / ``y_key`` name the
    arrays of npz files (default ``x``/``y``, else the one array of each kind), ``group_key`` their group ids
    (default: a ``groups``/``group``/``tracks``/``track`` array when present), by which ``val`` is carved
    (``group_split``: no group in both train and val).
    """
    spec = data_spec(spec, **options)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise UserError(f"unknown split {unknown[0]!r}; use one of {', '.join(SPLITS)}")
    if resize_to is not None and (spec.image_size is not None or spec.storage_size is not None):
        raise UserError(f"resize_to {resize_to} replaces data.image_size / data.storage_size; give one of them")
    source = open_source(spec, cache=cache, download=download)
    out: dict[str, ArrayDataset | PackedDataset] = {}
    for split, n in splits.items():
        x, y = _split(source, split, spec.val_fraction, spec.split_seed)
        if n is not None:
            idx = subset_indices(len(y), n)
            x, y = x[idx], y[idx]
        if spec.storage_size is not None:
            images = x if isinstance(x, PackedImages | DiskImages) else PackedImages.from_arrays(x)
            out[split] = PackedDataset(images, y, source.classes, source.name, spec.image_size).to(device)
            continue
        if spec.image_size is not None or resize_to is not None:
            x = resize(x, resize_to or spec.image_size)
        out[split] = ArrayDataset(x.contiguous(), y, source.classes, source.name).to(device)
    return out
