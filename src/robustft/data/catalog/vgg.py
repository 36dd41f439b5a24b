"""The Oxford VGG sets with official splits: Flowers-102 (``setid.mat``), Oxford-IIIT Pets (``trainval.txt`` /
``test.txt``) and DTD (``labels/{train,val,test}1.txt``, split 1)."""

import numpy as np

from ...errors import UserError
from ..download import Remote
from ..readers import load_mat
from ..source import Source
from .base import Card, Options, fetch, read_lines
from .listed import Listed, listed_source

__all__ = ["DTD", "FLOWERS102", "OXFORD_PETS"]

_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102"
FLOWERS_IMAGES = Remote(f"{_FLOWERS}/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa")
FLOWERS_LABELS = Remote(f"{_FLOWERS}/imagelabels.mat", "e0620be6f572b9609742df49c70aed4d")
FLOWERS_SETID = Remote(f"{_FLOWERS}/setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c")
_PETS = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
PETS_IMAGES = Remote(f"{_PETS}/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c")
PETS_ANNOTATIONS = Remote(f"{_PETS}/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f")
DTD_REMOTE = Remote("https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
                    "fff73e5086ae6bdbea199a49dfb8a4c1")
DTD_PARTITION = 1


def _mat_vector(path, key: str) -> np.ndarray:
    """One integer vector of a ``.mat`` file."""
    try:
        return np.asarray(load_mat(path)[key]).reshape(-1).astype(np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {key!r} from {path} ({e}); delete it and download it again") from e


def flowers102(opts: Options) -> Source:
    """Oxford Flowers-102 from ``<root>/flowers102``: setid.mat's trnid / valid / tstid; classes "1".."102"."""
    folder = opts.root / "flowers102"
    fetch(folder, "Flowers-102", {FLOWERS_IMAGES: ["jpg"], FLOWERS_LABELS: ["imagelabels.mat"],
                                  FLOWERS_SETID: ["setid.mat"]}, opts.download)
    labels = _mat_vector(folder / "imagelabels.mat", "labels") - 1  # labels[i - 1] is image i's class, 1-based
    files: Listed = {}
    for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        ids = _mat_vector(folder / "setid.mat", key)
        if ids.min() < 1 or ids.max() > len(labels):
            raise UserError(f"{folder / 'setid.mat'}: {key} has image ids outside 1..{len(labels)}")
        files[split] = [(f"jpg/image_{i:05d}.jpg", int(labels[i - 1])) for i in sorted(ids.tolist())]
    return listed_source("flowers102", folder, [str(c) for c in range(1, 103)], files, opts)


def oxford_pets(opts: Options) -> Source:
    """Oxford-IIIT Pets (37 breeds) from ``<root>/oxford_pets``: annotations/trainval.txt is train, test.txt test."""
    folder = opts.root / "oxford_pets"
    fetch(folder, "Oxford-IIIT Pets", {PETS_IMAGES: ["images"],
                                       PETS_ANNOTATIONS: ["annotations/trainval.txt", "annotations/test.txt"]},
          opts.download)
    files: Listed = {}
    names: dict[int, str] = {}
    for split, listing in (("train", "trainval"), ("test", "test")):
        rows = [line.split() for line in read_lines(folder / "annotations" / f"{listing}.txt")
                if not line.startswith("#")]
        if any(len(row) < 2 or not row[1].isdigit() for row in rows):
            raise UserError(f"{folder}/annotations/{listing}.txt is not an official list (image class ...)")
        files[split] = [(f"images/{row[0]}.jpg", int(row[1]) - 1) for row in rows]
        names.update({int(row[1]) - 1: row[0].rsplit("_", 1)[0] for row in rows})
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{folder}/annotations: class ids are not 1..{len(names)}; download the annotations again")
    return listed_source("oxford_pets", folder, [names[i] for i in range(len(names))], files, opts)


def dtd(opts: Options) -> Source:
    """DTD (47 textures) from ``<root>/dtd/dtd``: the official train / val / test lists of partition 1."""
    folder = opts.root / "dtd"
    lists = [f"dtd/labels/{split}{DTD_PARTITION}.txt" for split in ("train", "val", "test")]
    fetch(folder, "DTD", {DTD_REMOTE: ["dtd/images", *lists]}, opts.download)
    base = folder / "dtd"
    rows = {split: read_lines(folder / path) for split, path in zip(("train", "val", "test"), lists, strict=True)}
    classes = sorted({line.split("/", 1)[0] for lines in rows.values() for line in lines})
    label = {c: i for i, c in enumerate(classes)}
    files = {split: [(f"images/{line}", label[line.split("/", 1)[0]]) for line in lines]
             for split, lines in rows.items()}
    return listed_source("dtd", base, classes, files, opts)


FLOWERS102 = Card("flowers102", "Oxford Flowers-102", 102, {"train": 1020, "val": 1020, "test": 6149},
                  "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", "no licence stated (research use)",
                  "official setid.mat (trnid / valid / tstid)", flowers102)
OXFORD_PETS = Card("oxford_pets", "Oxford-IIIT Pets", 37, {"train": 3680, "test": 3669},
                   "https://www.robots.ox.ac.uk/~vgg/data/pets/", "CC BY-SA 4.0",
                   "official trainval.txt (train) / test.txt; val carved from train", oxford_pets)
DTD = Card("dtd", "Describable Textures (DTD)", 47, {"train": 1880, "val": 1880, "test": 1880},
           "https://www.robots.ox.ac.uk/~vgg/data/dtd/", "research use (images from Flickr, © their owners)",
           f"official labels/{{train,val,test}}{DTD_PARTITION}.txt (partition {DTD_PARTITION})", dtd)
