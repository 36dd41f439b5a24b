"""On-disk memoisation of decoded images, so an image folder is decoded once per content and size.

An entry is trusted no more than fresh data: it must load as plain tensors, pass the caller's ``check`` (the dtype,
shape, length and labels that decoding would give) and match the sha256 content digest stored with it. Anything
else is a miss, said in one warning line, and the entry is decoded and written again.
"""

import hashlib
import logging
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_save
from ..errors import UserError, warn
from .paths import default_cache_dir
from .readers import open_regular

__all__ = ["cached"]

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # part of every key: bump it when the stored format changes so old entries are never read


def _digest(value: dict[str, Any]) -> str:
    """sha256 of every key and value: a tensor's dtype, shape and bytes, anything else its ``repr``."""
    digest = hashlib.sha256()
    for key in sorted(value):
        item = value[key]
        if isinstance(item, torch.Tensor):
            digest.update(f"{key}\0{item.dtype}\0{tuple(item.shape)}\0".encode())
            digest.update(item.contiguous().numpy())
        else:
            digest.update(f"{key}\0{item!r}\0".encode())
    return digest.hexdigest()


def _plain(tensor: torch.Tensor) -> bool:
    """Whether a loaded tensor is exactly its storage (a stride trick could make a tiny file look like terabytes)."""
    return (tensor.is_contiguous() and tensor.storage_offset() == 0
            and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size())


def _problem(entry: Any, check: Callable[[dict[str, Any]], str | None]) -> str | None:
    """Why a loaded cache file cannot be used (None when it can): cheap structural checks before the digest."""
    if not (isinstance(entry, dict) and entry.keys() == {"digest", "value"} and isinstance(entry["value"], dict)):
        return "it is not a decode-cache entry"
    value = entry["value"]
    if not all(_plain(v) for v in value.values() if isinstance(v, torch.Tensor)):
        return "it holds a tensor that is not stored as one plain block"
    if (problem := check(value)) is not None:
        return problem
    return None if _digest(value) == entry["digest"] else "its content digest does not match (modified or damaged)"


def cached(key: tuple, compute: Callable[[], dict[str, Any]], enabled: bool = True, *,
           check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """``compute()``, stored under ``<cache dir>/decoded/<sha256(key)>.pt`` and loaded from there next time.

    ``key`` must identify the inputs completely (their content, split, image size); values are dicts of tensors,
    strings and lists, so they load with ``weights_only=True``. ``check(value)`` says why a loaded value is not what
    ``compute`` would give (None: it may be), e.g. a wrong shape or labels.
    """
    if not enabled:
        return compute()
    digest = hashlib.sha256(repr((CACHE_VERSION, *key)).encode()).hexdigest()[:32]
    path = default_cache_dir() / "decoded" / f"{digest}.pt"
    if path.exists():
        problem = _load(path, check)
        if not isinstance(problem, str):
            return problem
        # A bad entry only costs a re-decode; it must never stop a run, nor be used.
        warn(f"ignoring decode cache file {path}: {problem}; decoding again")
    value = compute()
    try:
        atomic_save({"digest": _digest(value), "value": value}, path)
    except OSError as e:  # e.g. a read-only or full cache disk: the data itself is fine
        log.warning("could not write decode cache %s (%s)", path, e)
    return value


def _load(path: Path, check: Callable[[dict[str, Any]], str | None]) -> dict[str, Any] | str:
    """The value a cache file holds, or why it cannot be used."""
    try:
        with open_regular(path) as f:
            entry = torch.load(f, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, UserError) as e:
        return f"it cannot be read ({(str(e) or type(e).__name__).splitlines()[0]})"
    return _problem(entry, check) or entry["value"]
