"""Every dataset robustft knows by name: its card (classes, official split sizes, source, licence, split rule)
and how it opens from the data root, downloading and unpacking the official archives where allowed."""

from ..named import cifar10, cifar100, svhn
from ..source import Source
from .base import Card, Options
from .caltech import CALTECH101, CALTECH256
from .corruptions import CORRUPTIONS, CorruptionCard, corruption_dir
from .fgvc import CUB200, FGVC_AIRCRAFT, STANFORD_DOGS
from .food101 import FOOD101
from .imagenet import IMAGENET, IMAGENET_ENV, TINYIMAGENET
from .stl10 import STL10
from .vgg import DTD, FLOWERS102, OXFORD_PETS

__all__ = ["CATALOG", "CORRUPTIONS", "Card", "CorruptionCard", "IMAGENET_ENV", "Options", "corruption_dir",
           "open_named", "table"]

_ARRAYS = "val carved from train"
CATALOG = {card.name: card for card in (
    Card("cifar10", "CIFAR-10", 10, {"train": 50000, "test": 10000}, "https://www.cs.toronto.edu/~kriz/cifar.html",
         "no licence stated by the authors", f"official train / test; {_ARRAYS}",
         lambda o: cifar10(o.root, o.download)),
    Card("cifar100", "CIFAR-100 (fine labels)", 100, {"train": 50000, "test": 10000},
         "https://www.cs.toronto.edu/~kriz/cifar.html", "no licence stated by the authors",
         f"official train / test; {_ARRAYS}", lambda o: cifar100(o.root, o.download)),
    Card("svhn", "SVHN (cropped digits)", 10, {"train": 73257, "test": 26032},
         "http://ufldl.stanford.edu/housenumbers/",
         "non-commercial use only", f"official train / test (no extra); {_ARRAYS}", lambda o: svhn(o.root, o.download)),
    CALTECH256, CUB200, STANFORD_DOGS, DTD, STL10, TINYIMAGENET, FLOWERS102, OXFORD_PETS, FGVC_AIRCRAFT,
    CALTECH101, FOOD101, IMAGENET,
)}


def open_named(name: str, opts: Options) -> Source:
    """The named dataset ``name`` (a key of :data:`CATALOG`) under ``opts.root``."""
    return CATALOG[name].open(opts)


def table(markdown: bool = False) -> str:
    """Every name with its classes, official split sizes, split rule, source and licence (``robustft datasets``)."""
    header = ["name", "dataset", "classes", "train", "val", "test", "splits", "source", "licence"]
    rows = [[c.name, c.title, str(c.classes), *(f"{c.sizes[s]:,}" if s in c.sizes else "-"
                                                 for s in ("train", "val", "test")), c.split, c.source, c.licence]
            for c in CATALOG.values()]
    rows += [[c.name, c.title, str(c.classes), "-", "-", f"{c.per_severity:,} x {c.corruptions} x 5",
              f"test only: {c.per_severity:,} images per corruption and severity (--corruption-dir {c.name})",
              c.remote.url + ("" if c.remote.md5 else " (no checksum pinned)"), c.licence]
             for c in CORRUPTIONS.values()]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        cells = [[cell.replace("|", "\\|").replace("<", "&lt;") for cell in r] for r in rows]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"
    return "\n\n".join("\n".join(f"{key:>8}: {value}" for key, value in zip(header, r, strict=True))
                       for r in rows) + "\n"

