"""``DataSpec``: which dataset, and how it is decoded, stored and split — each option and its default written once.

It is the run config's ``data`` section (``DataConfig`` adds the subsets, augmentation and batch sizes), what
``load_dataset`` reads, and what the CLI's data flags set; its help texts are ``robustft config``'s."""

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UserError
from .limits import DecodeLimits

__all__ = ["DataSpec", "data_spec"]


@dataclass
class DataSpec:
    """Which dataset, and how it is decoded, stored and split."""

    name: str = field(default="", metadata={"help": "dataset spec (cifar10, a .zip/.npz path, ...)"})
    root: str | None = field(default=None, metadata={"help": "data root for named datasets"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of train carved out for validation",
                                                       "gt": 0, "lt": 1})
    test_fraction: float | None = field(default=None, metadata={
        "help": "carve a class-stratified test split of this fraction from the training data (seeded by split_seed, "
                "disjoint from train and val) when the data has no test split", "gt": 0, "lt": 1})
    split_seed: int = field(default=0, metadata={"help": "seed of the stratified train/val (and test_fraction) splits",
                                                 "ge": 0, "le": 2**32 - 1})
    classes: list[int | str] | None = field(default=None, metadata={
        "help": "keep only these classes (indices or names), relabelled 0..k-1 in this order; recorded in the card"})
    x_key: str | None = field(default=None, metadata={
        "help": ".npz images array (default: x, else the file's only uint8 N×H×W(×C) array)"})
    y_key: str | None = field(default=None, metadata={
        "help": ".npz labels array (default: y, else the file's only 1-D integer array of that length)"})
    group_key: str | None = field(default=None, metadata={
        "help": ".npz per-sample group ids (default: a groups/group/tracks/track array when present): validation is "
                "carved by group, one class's group (e.g. a GTSRB track) never in both train and val"})
    image_size: int | None = field(default=None, metadata={
        "help": "resize every image to this square size (default: as stored); the card records the size trained at, "
                "which evaluate of the export uses unless --image-size", "ge": 1})
    storage_size: int | None = field(default=None, metadata={
        "help": "keep image folders' aspect ratio, the shorter side resized to this (256 for 224-px crops, as "
                "Resize(256)), and train and evaluate on data.image_size crops of them (null: resize every image "
                "to a data.image_size square)", "ge": 1})
    storage: Literal["memory", "disk", "auto"] = field(default="memory", metadata={
        "help": "with data.storage_size: hold the decoded images in memory, or decode them once into a store on disk "
                "(under the cache directory) and read each batch from it, ahead of its use; auto: memory when a "
                "split fits data.memory_budget_mb"})
    memory_budget_mb: float | None = field(default=None, metadata={
        "help": "data.storage=auto: the most decoded pixels held in memory per split (null: half the machine's "
                "memory)", "gt": 0})
    max_file_mb: float = field(default=DecodeLimits.max_file_mb, metadata={
        "help": "largest image file read (a zip member's size is checked before reading)", "gt": 0})
    max_image_pixels: int = field(default=DecodeLimits.max_image_pixels, metadata={
        "help": "largest image (width x height from its header) decoded", "ge": 1})
    max_array_mb: float = field(default=DecodeLimits.max_array_mb, metadata={
        "help": "largest .npz array read (decompressed size, checked before reading)", "gt": 0})
    max_classes: int = field(default=DecodeLimits.max_classes, metadata={
        "help": "most classes (class directories, or the largest .npz label + 1) accepted", "ge": 1})

    def __post_init__(self) -> None:
        if self.storage_size is None and self.storage != "memory":
            raise UserError(f"data.storage={self.storage} stores image folders kept at their aspect ratio: set "
                            f"data.storage_size (e.g. 256) and data.image_size (e.g. 224)")
        if self.storage_size is not None and (self.image_size is None or self.image_size > self.storage_size):
            raise UserError(f"data.storage_size={self.storage_size} needs data.image_size (the side of the crops) "
                            f"at most {self.storage_size}, got {self.image_size}")

    def limits(self) -> DecodeLimits:
        """The decoding limits these keys set."""
        return DecodeLimits(max_file_mb=self.max_file_mb, max_image_pixels=self.max_image_pixels,
                            max_array_mb=self.max_array_mb, max_classes=self.max_classes)


def data_spec(spec: "DataSpec | str | os.PathLike", **options: Any) -> DataSpec:
    """``spec`` with ``options`` (DataSpec keys) set: a DataSpec (or a run's ``DataConfig``), or a dataset name or
    path whose other keys keep their defaults."""
    base = spec if isinstance(spec, DataSpec) else DataSpec(name=os.fspath(spec))
    known = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown data option(s) {', '.join(unknown)}; the options are {', '.join(known)}")
    if not options:
        return base
    return dataclasses.replace(base, **{k: os.fspath(v) if isinstance(v, os.PathLike) else v
                                        for k, v in options.items()})
