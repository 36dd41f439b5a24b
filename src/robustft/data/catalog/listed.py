"""A dataset given as per-split lists of image files and labels, decoded exactly like an image folder (same
decoder, limits and on-disk cache), so it plugs into whatever stores decoded image folders."""

import functools
import hashlib
from pathlib import Path

from ...errors import UserError
from ..imagefolder import _DirTree, decoded_split
from ..source import Arrays, Source
from .base import Options

__all__ = ["Listed", "listed_source"]

Listed = dict[str, list[tuple[str, int]]]  # split -> (path under the base directory, label), in canonical order


class _ListedTree(_DirTree):
    """The listed files under ``path`` only: no directory walk, and only their stats make the fingerprint."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self._names = names


def listed_source(name: str, base: Path, classes: list[str], files: Listed, opts: Options) -> Source:
    """A :class:`Source` whose split ``s`` decodes ``files[s]`` (paths relative to ``base``)."""
    for split, items in files.items():
        if not items:
            raise UserError(f"{name}: the official {split} list under {base} names no images; "
                            f"delete {base} and download the dataset again")
    tree = _ListedTree(base, sorted({path for items in files.values() for path, _ in items}))
    try:
        fingerprint = tree.fingerprint()  # stats every listed file
    except OSError as e:
        raise UserError(f"{name}: {e.filename} (listed in its official split files) cannot be read ({e.strerror}); "
                        f"delete {base} and download the dataset again") from e

    @functools.cache
    def load(split: str) -> Arrays:
        listing = hashlib.sha256(repr(files[split]).encode()).hexdigest()
        return decoded_split(tree, files[split], (fingerprint, "listed", listing), opts.image_size, opts.limits,
                             opts.cache, opts.storage_size, opts.storage, opts.memory_budget_mb)

    return Source(name=name, classes=classes, loaders={split: functools.partial(load, split) for split in files})
