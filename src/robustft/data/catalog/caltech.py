"""Caltech-101 and Caltech-256: one directory per class, no official split (RoLI's published split for
Caltech-256; 30 training images per class, drawn with a fixed seed, for Caltech-101)."""

import json
from pathlib import Path

import torch

from ...errors import UserError
from ..download import Remote
from ..readers import read_text
from ..source import Source
from .base import Card, Options, fetch
from .listed import Listed, listed_source

__all__ = ["CALTECH101", "CALTECH256"]

CALTECH101_REMOTE = Remote("https://drive.usercontent.google.com/download?id=137RyRjvTBkBiIfeYBNZBtViDHQ6_Ewsp"
                           "&export=download&confirm=t", "b224c7392d521a49829488ab0f1120d9",
                           filename="101_ObjectCategories.tar.gz")  # torchvision's Caltech101 mirror and md5
CALTECH256_REMOTE = Remote("https://data.caltech.edu/records/nyy15-4j048/files/256_ObjectCategories.tar",
                           "67b4f42ca05d46448c6bb8ecd2220f6d")
_ROLI = "https://raw.githubusercontent.com/DongXzz/RoLI/5f34b8fb4ae48afe26de6e627022bb0db058e8c5/data_splits/caltech256"
ROLI_SPLITS = {"train": Remote(f"{_ROLI}/train.json", "5c3a834a01f13a350ad8445e05b073b0"),
               "val": Remote(f"{_ROLI}/val.json", "30c8674e5952487475cbb667c2d484e5"),
               "test": Remote(f"{_ROLI}/test.json", "d989ea71641920262c8ed0f608cc8ffb")}
CALTECH101_TRAIN_PER_CLASS = 30
CALTECH101_SPLIT_SEED = 0
_EXTENSIONS = (".jpg", ".jpeg")


def _roli_split(path: Path, base: Path, classes: list[str]) -> list[tuple[str, int]]:
    """One RoLI split file, ``{"<class dir>/<image>": label}``, checked against the class directories."""
    try:
        entries = json.loads(read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it and download it again") from e
    if not isinstance(entries, dict):
        raise UserError(f"{path} is not a RoLI split file (a JSON object of image path -> label)")
    items = []
    for name, label in sorted(entries.items()):
        folder = name.split("/", 1)[0]
        if folder not in classes or classes.index(folder) != int(label):
            raise UserError(f"{path}: {name} has label {label}, but its class directory {folder!r} is class "
                            f"{classes.index(folder) if folder in classes else 'unknown'} of {base}")
        items.append((name, int(label)))
    return items


def caltech256(opts: Options) -> Source:
    """Caltech-256 (257 classes with clutter) from ``<root>/caltech256/256_ObjectCategories``, RoLI's split."""
    folder = opts.root / "caltech256"
    fetch(folder, "Caltech-256", {CALTECH256_REMOTE: ["256_ObjectCategories"],
                                  **{r: [r.name] for r in ROLI_SPLITS.values()}}, opts.download)
    base = folder / "256_ObjectCategories"
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    files = {split: _roli_split(folder / r.name, base, classes) for split, r in ROLI_SPLITS.items()}
    return listed_source("caltech256", base, classes, files, opts)


def caltech101(opts: Options) -> Source:
    """Caltech-101 (101 classes, BACKGROUND_Google left out) from ``<root>/caltech101/101_ObjectCategories``."""
    folder = opts.root / "caltech101"
    fetch(folder, "Caltech-101", {CALTECH101_REMOTE: ["101_ObjectCategories"]}, opts.download)
    base = folder / "101_ObjectCategories"
    classes = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")
    generator = torch.Generator().manual_seed(CALTECH101_SPLIT_SEED)
    files: Listed = {"train": [], "test": []}
    for label, name in enumerate(classes):
        images = sorted(f"{name}/{p.name}" for p in (base / name).iterdir() if p.suffix.lower() in _EXTENSIONS)
        train = set(torch.randperm(len(images), generator=generator)[:CALTECH101_TRAIN_PER_CLASS].tolist())
        for i, image in enumerate(images):
            files["train" if i in train else "test"].append((image, label))
    return listed_source("caltech101", base, classes, files, opts)


CALTECH256 = Card(
    "caltech256", "Caltech-256", 257, {"train": 14649, "val": 771, "test": 15187},
    "https://data.caltech.edu/records/nyy15-4j048", "CC BY 4.0 (as listed on CaltechDATA)",
    "RoLI's train/val/test JSON split (DongXzz/RoLI data_splits/caltech256, pinned commit, md5-checked)",
    caltech256)
CALTECH101 = Card(
    "caltech101", "Caltech-101", 101, {"train": 3030, "test": 5647},
    "https://data.caltech.edu/records/mzrjq-6wc02 (downloaded from torchvision's Google Drive copy, same md5)",
    "CC BY 4.0 (as listed on CaltechDATA)",
    f"no official split: {CALTECH101_TRAIN_PER_CLASS} random training images per class (torch.randperm, seed "
    f"{CALTECH101_SPLIT_SEED}, class by class in sorted order), the rest test; val carved from train",
    caltech101)
