"""ImageNet-1k from a local ILSVRC-2012 folder (no download: the archives need an image-net.org account), and
Tiny-ImageNet (200 of its classes at 64×64). Both use the official validation set as their test split."""

import os
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..download import Remote
from ..readers import load_mat
from ..source import Source
from .base import Card, Options, fetch, read_lines
from .listed import Listed, listed_source

__all__ = ["IMAGENET", "IMAGENET_ENV", "TINYIMAGENET", "imagenet_root"]

IMAGENET_ENV = "ROBUSTFT_IMAGENET"
DEVKIT = "ILSVRC2012_devkit_t12"  # ILSVRC2012_devkit_t12.tar.gz, md5 fa75699e90414af021442c21a62c3abf
TINY_REMOTE = Remote("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")
_EXTENSIONS = (".jpeg", ".jpg", ".png")


def _images(folder: Path) -> list[str]:
    """Image file names directly in ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)


def tinyimagenet(opts: Options) -> Source:
    """Tiny-ImageNet-200 from ``<root>/tinyimagenet/tiny-imagenet-200``: train/ (100k) and the official val/ (10k,
    labels in val_annotations.txt) as the test split; classes are the sorted wnids."""
    folder = opts.root / "tinyimagenet"
    base_name = "tiny-imagenet-200"
    fetch(folder, "Tiny-ImageNet", {TINY_REMOTE: [f"{base_name}/{f}" for f in ("wnids.txt", "train", "val")]},
          opts.download)
    base = folder / base_name
    classes = sorted(read_lines(base / "wnids.txt"))
    label = {c: i for i, c in enumerate(classes)}
    train = [(f"train/{wnid}/images/{name}", label[wnid]) for wnid in classes
             for name in _images(base / "train" / wnid / "images")]
    rows = [line.split("\t") for line in read_lines(base / "val" / "val_annotations.txt")]
    if any(len(row) < 2 or row[1] not in label for row in rows):
        raise UserError(f"{base}/val/val_annotations.txt is not the official list (image, wnid of wnids.txt, box)")
    test = [(f"val/images/{row[0]}", label[row[1]]) for row in sorted(rows)]
    return listed_source("tinyimagenet", base, classes, {"train": train, "test": test}, opts)


def imagenet_root(opts: Options) -> Path:
    """``$ROBUSTFT_IMAGENET``, else ``<data root>/imagenet``: an ILSVRC-2012 folder with train/ and val/."""
    env = os.environ.get(IMAGENET_ENV)
    return Path(env).expanduser() if env else opts.root / "imagenet"


def _val_labels(root: Path, classes: list[str], images: list[str]) -> list[int]:
    """Labels of the flat val/ images (sorted by name) from the devkit's ground truth and meta.mat."""
    data = root / DEVKIT / "data"
    try:
        synsets = load_mat(data / "meta.mat", squeeze_me=True)["synsets"]
        wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in np.atleast_1d(synsets)}
        truth = [int(v) for v in read_lines(data / "ILSVRC2012_validation_ground_truth.txt")]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{root}/val/ is flat, so its labels come from the devkit, but {data} cannot be read ({e}); "
                        f"extract ILSVRC2012_devkit_t12.tar.gz into {root}, or sort val/ into val/<wnid>/") from e
    if len(truth) != len(images):
        raise UserError(f"{root}/val/ has {len(images)} images but the devkit ground truth lists {len(truth)}; "
                        f"val/ must hold the whole ILSVRC2012_img_val.tar")
    label = {c: i for i, c in enumerate(classes)}
    try:
        return [label[wnid[t]] for t in truth]
    except KeyError as e:
        raise UserError(f"the devkit's class {e} has no train/<wnid>/ directory under {root}") from e


def imagenet(opts: Options) -> Source:
    """ImageNet-1k from a local ILSVRC-2012 folder (see :func:`imagenet_root`): train/<wnid>/ is train; val/
    (by wnid, or flat with the devkit's labels) is the test split; classes are the sorted wnids."""
    root = imagenet_root(opts)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise UserError(f"ImageNet is not downloaded automatically (the ILSVRC-2012 archives need an image-net.org "
                        f"account): no train/ and val/ under {root}; extract ILSVRC2012_img_train.tar into "
                        f"{root}/train/<wnid>/ and ILSVRC2012_img_val.tar into {root}/val/ (plus "
                        f"ILSVRC2012_devkit_t12.tar.gz into {root}), or set ${IMAGENET_ENV} to such a folder")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    files: Listed = {"train": [(f"train/{c}/{name}", i) for i, c in enumerate(classes)
                               for name in _images(root / "train" / c)]}
    val_dirs = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    if val_dirs:
        unknown = sorted(set(val_dirs) - set(classes))
        if unknown:
            raise UserError(f"{root}/val/ has class directories {unknown[:3]} that train/ lacks")
        files["test"] = [(f"val/{c}/{name}", classes.index(c)) for c in val_dirs for name in _images(root / "val" / c)]
    else:
        images = _images(root / "val")
        files["test"] = [(f"val/{name}", y) for name, y in zip(images, _val_labels(root, classes, images), strict=True)]
    return listed_source("imagenet", root, classes, files, opts)


TINYIMAGENET = Card("tinyimagenet", "Tiny-ImageNet-200", 200, {"train": 100000, "test": 10000},
                    "http://cs231n.stanford.edu/tiny-imagenet-200.zip", "ImageNet terms (images from ImageNet)",
                    "official train/; the official val/ (labelled) is the test split; val carved from train",
                    tinyimagenet)
IMAGENET = Card("imagenet", "ImageNet-1k (ILSVRC-2012)", 1000, {"train": 1281167, "test": 50000},
                f"local folder only: ${IMAGENET_ENV}, else <data root>/imagenet (https://image-net.org)",
                "ImageNet terms of access (non-commercial research and education)",
                "train/<wnid>/; the official val/ (devkit labels, or val/<wnid>/) is the test split; val carved "
                "from train", imagenet)
