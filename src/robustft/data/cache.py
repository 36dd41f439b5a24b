"""On-disk memoisation of decoded images, so an image folder is decoded once per content and size."""

import hashlib
import logging
import pickle
from collections.abc import Callable
from typing import Any

import torch

from .._io import atomic_save
from .paths import default_cache_dir

__all__ = ["cached"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # part of every key: bump it when the stored format changes so old entries are never read


def cached(key: tuple, compute: Callable[[], dict[str, Any]], enabled: bool = True) -> dict[str, Any]:
    """``compute()``, stored under ``<cache dir>/decoded/<sha256(key)>.pt`` and loaded from there next time.

    ``key`` must identify the inputs completely (path, size, mtime, split, image size); values are dicts of
    tensors, strings and lists, so they load with ``weights_only=True``.
    """
    if not enabled:
        return compute()
    digest = hashlib.sha256(repr((CACHE_VERSION, *key)).encode()).hexdigest()[:32]
    path = default_cache_dir() / "decoded" / f"{digest}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            # A damaged entry only costs a re-decode; it must never stop a run.
            log.warning("ignoring unreadable cache file %s (%s)", path, e)
    value = compute()
    try:
        atomic_save(value, path)
    except OSError as e:  # e.g. a read-only or full cache disk: the data itself is fine
        log.warning("could not write decode cache %s (%s)", path, e)
    return value
