"""What every named dataset declares (its card) and what opening one needs (data root, decode options)."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError
from ..download import Remote, ensure_files
from ..limits import DecodeLimits
from ..readers import read_text
from ..source import Source

__all__ = ["Card", "Options", "fetch", "read_lines"]


@dataclass(frozen=True)
class Options:
    """Where named datasets live and how their images are decoded (as for image folders): what ``open_source`` gives
    from its ``DataSpec``, whose defaults these are."""

    root: Path
    download: bool
    image_size: int | None
    cache: bool
    limits: DecodeLimits
    storage_size: int | None  # keep aspect ratios, shorter side resized to this (see ``image_folder``)
    storage: str  # memory, disk or auto (see ``image_folder``)
    memory_budget_mb: float


@dataclass(frozen=True)
class Card:
    """One named dataset: its class count, official split sizes, where it comes from, its terms, how it opens."""

    name: str
    title: str
    classes: int
    sizes: dict[str, int]  # official split sizes; "val" absent where validation is carved from train
    source: str  # the page or download it comes from
    licence: str
    split: str  # how the splits are formed
    open: Callable[[Options], Source]


def fetch(folder: Path, title: str, needs: dict[Remote, list[str]], download: bool) -> None:
    """Make sure each remote's files (paths under ``folder``) exist, downloading and unpacking what is missing."""
    for remote, files in needs.items():
        ensure_files(folder, files, remote, what=title, download=download)


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a text annotation file, stripped; one UserError if it cannot be read."""
    try:
        return [line.strip() for line in read_text(path).splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it and download the dataset again") from e
