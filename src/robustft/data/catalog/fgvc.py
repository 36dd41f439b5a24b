"""Fine-grained sets with official lists: CUB-200-2011 (``.txt`` tables), Stanford Dogs (``.mat`` lists) and
FGVC-Aircraft (``images_variant_<split>.txt``)."""

import numpy as np

from ...errors import UserError
from ..download import Remote
from ..readers import load_mat
from ..source import Source
from .base import Card, Options, fetch, read_lines
from .listed import Listed, listed_source

__all__ = ["CUB200", "FGVC_AIRCRAFT", "STANFORD_DOGS"]

CUB_REMOTE = Remote("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                    "97eceeb196236b17998738112f37df78")
_DOGS = "http://vision.stanford.edu/aditya86/ImageNetDogs"
DOGS_IMAGES = Remote(f"{_DOGS}/images.tar", None)  # the site publishes no checksum
DOGS_LISTS = Remote(f"{_DOGS}/lists.tar", None)
AIRCRAFT_REMOTE = Remote("https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                         None)  # the site publishes no checksum (torchvision downloads it unchecked too)


def _table(path, columns: int) -> list[list[str]]:
    """Whitespace-separated rows of an annotation table, each checked to have ``columns`` fields."""
    rows = [line.split(maxsplit=columns - 1) for line in read_lines(path)]
    if any(len(row) != columns for row in rows):
        raise UserError(f"{path} is not an official annotation file ({columns} fields per line expected)")
    return rows


def cub200(opts: Options) -> Source:
    """CUB-200-2011 from ``<root>/cub200/CUB_200_2011``: the official train_test_split.txt."""
    folder = opts.root / "cub200"
    fetch(folder, "CUB-200-2011", {CUB_REMOTE: ["CUB_200_2011/images", "CUB_200_2011/images.txt",
                                                "CUB_200_2011/image_class_labels.txt",
                                                "CUB_200_2011/train_test_split.txt", "CUB_200_2011/classes.txt"]},
          opts.download)
    base = folder / "CUB_200_2011"
    classes = [name for _, name in _table(base / "classes.txt", 2)]
    paths = dict(_table(base / "images.txt", 2))
    labels = {i: int(label) - 1 for i, label in _table(base / "image_class_labels.txt", 2)}
    files: Listed = {"train": [], "test": []}
    try:
        for i, is_train in _table(base / "train_test_split.txt", 2):
            files["train" if is_train == "1" else "test"].append((f"images/{paths[i]}", labels[i]))
    except KeyError as e:
        raise UserError(f"{base}: image id {e} of train_test_split.txt is missing from images.txt or "
                        f"image_class_labels.txt; download the dataset again") from e
    return listed_source("cub200", base, classes, files, opts)


def _dogs_list(path) -> list[tuple[str, int]]:
    """One Stanford Dogs list (``file_list``: paths under Images/, ``labels``: 1..120)."""
    try:
        mat = load_mat(path, squeeze_me=True)
        names = [str(np.asarray(f).reshape(-1)[0]) for f in np.atleast_1d(mat["file_list"])]
        labels = np.atleast_1d(mat["labels"]).astype(np.int64) - 1
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it and download the lists again") from e
    if len(names) != len(labels):
        raise UserError(f"{path} lists {len(names)} files but {len(labels)} labels")
    return [(f"Images/{n}", int(y)) for n, y in zip(names, labels, strict=True)]


def stanford_dogs(opts: Options) -> Source:
    """Stanford Dogs from ``<root>/stanford_dogs``: the official train_list.mat / test_list.mat."""
    folder = opts.root / "stanford_dogs"
    fetch(folder, "Stanford Dogs", {DOGS_IMAGES: ["Images"], DOGS_LISTS: ["train_list.mat", "test_list.mat"]},
          opts.download)
    files = {split: _dogs_list(folder / f"{split}_list.mat") for split in ("train", "test")}
    names = {y: path.split("/")[1] for path, y in files["train"]}
    if sorted(names) != list(range(len(names))):
        raise UserError(f"{folder / 'train_list.mat'}: labels are not 1..{len(names)}; download the lists again")
    return listed_source("stanford_dogs", folder, [names[y] for y in range(len(names))], files, opts)


def fgvc_aircraft(opts: Options) -> Source:
    """FGVC-Aircraft 2013b (100 variants) from ``<root>/fgvc_aircraft``: the official train / val / test lists."""
    folder = opts.root / "fgvc_aircraft"
    data = "fgvc-aircraft-2013b/data"
    fetch(folder, "FGVC-Aircraft", {AIRCRAFT_REMOTE: [f"{data}/images", f"{data}/variants.txt",
                                                      *(f"{data}/images_variant_{s}.txt"
                                                        for s in ("train", "val", "test"))]}, opts.download)
    base = folder / data
    classes = read_lines(base / "variants.txt")
    label = {c: i for i, c in enumerate(classes)}
    files: Listed = {}
    for split in ("train", "val", "test"):
        rows = _table(base / f"images_variant_{split}.txt", 2)
        unknown = sorted({v for _, v in rows} - label.keys())
        if unknown:
            raise UserError(f"{base}/images_variant_{split}.txt names variants {unknown[:3]} not in variants.txt")
        files[split] = [(f"images/{i}.jpg", label[v]) for i, v in rows]
    return listed_source("fgvc_aircraft", base, classes, files, opts)


CUB200 = Card("cub200", "CUB-200-2011", 200, {"train": 5994, "test": 5794},
              "https://data.caltech.edu/records/65de6-vp158", "no licence stated in the release (images from Flickr, "
              "© their owners; research use)", "official train_test_split.txt; val carved from train", cub200)
STANFORD_DOGS = Card("stanford_dogs", "Stanford Dogs", 120, {"train": 12000, "test": 8580},
                     "http://vision.stanford.edu/aditya86/ImageNetDogs/ (no checksum published)",
                     "ImageNet terms: non-commercial research and education",
                     "official train_list.mat / test_list.mat; val carved from train", stanford_dogs)
FGVC_AIRCRAFT = Card("fgvc_aircraft", "FGVC-Aircraft 2013b (variants)", 100,
                     {"train": 3334, "val": 3333, "test": 3333},
                     "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (no checksum published)",
                     "non-commercial research only (images © their photographers)",
                     "official images_variant_{train,val,test}.txt", fgvc_aircraft)
