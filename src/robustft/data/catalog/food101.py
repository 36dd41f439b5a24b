"""Food-101: ``food-101/meta/{train,test}.txt`` list ``<class>/<id>`` of ``images/<class>/<id>.jpg``."""

from ...errors import UserError
from ..download import Remote
from ..source import Source
from .base import Card, Options, fetch, read_lines
from .listed import listed_source

__all__ = ["FOOD101"]

FOOD101_REMOTE = Remote("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87")


def food101(opts: Options) -> Source:
    """Food-101 from ``<root>/food101/food-101``: the official meta/train.txt and meta/test.txt."""
    folder = opts.root / "food101"
    fetch(folder, "Food-101", {FOOD101_REMOTE: ["food-101/images", "food-101/meta/classes.txt",
                                                "food-101/meta/train.txt", "food-101/meta/test.txt"]},
          opts.download)
    base = folder / "food-101"
    classes = read_lines(base / "meta" / "classes.txt")
    label = {c: i for i, c in enumerate(classes)}
    files = {}
    for split in ("train", "test"):
        lines = read_lines(base / "meta" / f"{split}.txt")
        unknown = sorted({line.split("/", 1)[0] for line in lines} - label.keys())
        if unknown:
            raise UserError(f"{base}/meta/{split}.txt names classes {unknown[:3]} that meta/classes.txt lacks")
        files[split] = [(f"images/{line}.jpg", label[line.split("/", 1)[0]]) for line in lines]
    return listed_source("food101", base, classes, files, opts)


FOOD101 = Card("food101", "Food-101", 101, {"train": 75750, "test": 25250},
               "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
               "research use (images from foodspotting.com, fair-use statement on the site)",
               "official meta/train.txt / meta/test.txt; val carved from train", food101)
