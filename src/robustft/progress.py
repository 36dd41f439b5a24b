"""Progress of long phases: a tqdm bar on a terminal; elsewhere (logs of batch jobs) one plain line per interval
with the count, elapsed time, rate and ETA, e.g. ``evaluate clean+pgd20: 12/40 batches in 4 s, 3.1 batch/s, ETA 9 s``.

The interval is ``ROBUSTFT_PROGRESS_S`` seconds (default 30), read when a phase starts; a phase that ends sooner
prints nothing. Only the main process of a distributed job reports.
"""

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import Generic, TextIO, TypeVar

import torch.distributed as dist
from tqdm.auto import tqdm

from .errors import UserError

__all__ = ["Progress", "track", "duration", "INTERVAL_ENV"]

T = TypeVar("T")
INTERVAL_ENV = "ROBUSTFT_PROGRESS_S"
DEFAULT_INTERVAL_S = 30.0


def duration(seconds: float) -> str:
    """``42 s`` under a minute, else ``h:mm:ss``."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _interval_s() -> float:
    """The off-terminal reporting interval from the environment."""
    value = os.environ.get(INTERVAL_ENV, str(DEFAULT_INTERVAL_S))
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{INTERVAL_ENV} must be a number of seconds, got {value!r}") from None


class Progress(Generic[T]):
    """Iterates ``items`` unchanged while reporting; ``set_postfix`` text (e.g. the loss) ends each report."""

    def __init__(self, items: Iterable[T], total: int | None, desc: str, unit: str, interval_s: float,
                 stream: TextIO, enabled: bool) -> None:
        self.items, self.total, self.desc, self.unit = items, total, desc, unit
        self.interval_s, self.stream, self.enabled = interval_s, stream, enabled
        self.postfix = ""
        self._bar: tqdm | None = None

    def set_postfix(self, text: str) -> None:
        """Text shown after the numbers from the next report on."""
        self.postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def line(self, done: int, elapsed: float) -> str:
        """The plain report after ``done`` items in ``elapsed`` seconds."""
        rate = done / max(elapsed, 1e-9)
        plural = self.unit + ("es" if self.unit.endswith(("s", "x", "ch", "sh")) else "s")
        count = f"{done}/{self.total}" if self.total is not None else str(done)
        speed = f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}"
        parts = [f"{self.desc}: {count} {plural} in {duration(elapsed)}", speed]
        if self.total is not None:
            parts.append(f"ETA {duration(max(self.total - done, 0) / rate)}")
        return ", ".join(parts + ([self.postfix] if self.postfix else []))

    def __iter__(self) -> Iterator[T]:
        if not self.enabled:
            yield from self.items
        elif self.stream.isatty():
            with tqdm(self.items, total=self.total, desc=self.desc, unit=self.unit, leave=False, file=self.stream,
                      dynamic_ncols=True) as self._bar:
                yield from self._bar
            self._bar = None
        else:
            start = last = time.perf_counter()
            for done, item in enumerate(self.items, 1):
                yield item
                now = time.perf_counter()  # the caller's work on ``item`` is done
                if now - last >= self.interval_s:
                    print(self.line(done, now - start), file=self.stream, flush=True)
                    last = now


def track(items: Iterable[T], total: int | None = None, desc: str = "", *, unit: str = "batch",
          interval_s: float | None = None, stream: TextIO | None = None, enabled: bool = True) -> Progress[T]:
    """``items`` with progress on ``stream`` (default stderr): ``total`` defaults to ``len(items)`` when it has
    one; ``interval_s`` defaults to ``ROBUSTFT_PROGRESS_S`` or 30 s; ``enabled=False`` reports nothing."""
    main = not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)
    return Progress(items, total if total is not None or not isinstance(items, Sized) else len(items), desc, unit,
                    _interval_s() if interval_s is None else interval_s, sys.stderr if stream is None else stream,
                    enabled and main)
