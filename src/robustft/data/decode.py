"""Decoding many image files fast: in parallel over the CPU cores, and JPEGs shrunk in the DCT domain (PIL's
``draft``) when the stored size is at most half the file's, before the exact resize."""

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from PIL import Image

__all__ = ["decode_workers", "map_files", "shorter_side_size", "storage_size_of"]

T = TypeVar("T")
CHUNK = 32  # files per task sent to a worker: amortises the round trip, keeps the progress bar moving


class _Readable(Protocol):
    """What ``map_files`` needs of a file tree: a reader context giving ``read(name) -> bytes``."""

    def reader(self, limits: Any) -> AbstractContextManager[Callable[[str], bytes]]: ...


def shorter_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output (width, height): the shorter side ``size``, the longer one
    ``int(size * long / short)``, so the aspect ratio is kept."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def storage_size_of(image: Image.Image, image_size: int | None, storage_size: int | None) -> tuple[int, int] | None:
    """The (width, height) ``image`` is stored at: its shorter side ``storage_size``, else an ``image_size`` square,
    else as it is (None)."""
    if storage_size is not None:
        return shorter_side_size(*image.size, storage_size)
    return None if image_size is None else (image_size, image_size)


def decode_workers() -> int:
    """Processes to decode with: the CPU cores this process may run on (``ROBUSTFT_DECODE_WORKERS`` overrides)."""
    configured = os.environ.get("ROBUSTFT_DECODE_WORKERS")
    return max(1, int(configured)) if configured else len(os.sched_getaffinity(0))


_WORK: tuple[Any, Any, Callable] | None = None  # (tree, limits, fn) in a worker process, set by its initializer


def _init(tree: _Readable, limits: Any, fn: Callable) -> None:
    global _WORK
    _WORK = (tree, limits, fn)


def _run_chunk(names: Sequence[str]) -> list:
    tree, limits, fn = _WORK
    with tree.reader(limits) as read:
        return [fn(tree, read, name) for name in names]


def map_files(tree: _Readable, names: Sequence[str], fn: Callable[[Any, Callable[[str], bytes], str], T],
              limits: Any, workers: int | None = None) -> Iterator[T]:
    """``fn(tree, read, name)`` for each of ``names``, in order, spread over ``workers`` processes (default
    ``decode_workers()``; forked, like torch's DataLoader, so nothing is pickled but names and results).

    An exception in a worker is raised here, in the caller, as it was raised there (a ``UserError`` stays one).
    """
    workers = decode_workers() if workers is None else workers
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    if workers <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        with tree.reader(limits) as read:
            yield from (fn(tree, read, name) for name in names)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context, initializer=_init,
                             initargs=(tree, limits, fn)) as pool:
        for results in pool.map(_run_chunk, chunks):
            yield from results
