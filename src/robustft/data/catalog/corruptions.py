"""The published corruption benchmarks by name: downloaded and unpacked into the data root, then read by
``robustft.data.cifar_c`` (``--corruption-dir cifar10_c``)."""

from dataclasses import dataclass
from pathlib import Path

from ..download import Remote
from .base import fetch

__all__ = ["CORRUPTIONS", "CorruptionCard", "corruption_dir"]


@dataclass(frozen=True)
class CorruptionCard:
    """One corruption benchmark: test images only, ``per_severity`` of them for each corruption and severity."""

    name: str
    title: str
    classes: int
    corruptions: int
    per_severity: int
    remote: Remote
    folder: str  # what the archive unpacks to, under the data root (moved into place whole)
    licence: str


CORRUPTIONS = {card.name: card for card in (
    CorruptionCard("cifar10_c", "CIFAR-10-C", 10, 19, 10000,
                   Remote("https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
                          "56bf5dcef84df0e2308c6dcbcbbd8499"), "CIFAR-10-C", "CC BY 4.0"),
    CorruptionCard("cifar100_c", "CIFAR-100-C", 100, 19, 10000,
                   Remote("https://zenodo.org/records/3555552/files/CIFAR-100-C.tar",
                          "11f0ed0f1191edbf9fa23466ae6021d3"), "CIFAR-100-C", "CC BY 4.0"),
    # Zenodo lists an md5 for this file, but none could be confirmed from an independent copy: used unchecked.
    CorruptionCard("tinyimagenet_c", "Tiny-ImageNet-C", 200, 15, 10000,
                   Remote("https://zenodo.org/records/2536630/files/Tiny-ImageNet-C.tar", None),
                   "Tiny-ImageNet-C", "CC BY 4.0"),
)}


def corruption_dir(card: CorruptionCard, root: Path, download: bool) -> Path:
    """``<root>/<folder>``, downloaded and unpacked first if it is missing and ``download`` allows."""
    fetch(root, card.title, {card.remote: [card.folder]}, download)
    return root / card.folder
