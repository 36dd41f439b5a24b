"""User-facing error type: the CLI prints its message as one line and exits non-zero."""

import reprlib
import sys
from typing import Any

__all__ = ["UserError", "TrainingDiverged", "warn", "shown"]

MAX_SHOWN = 200
_SHOWN = reprlib.Repr()  # (keyword arguments need Python 3.12)
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxtuple, _SHOWN.maxdict, _SHOWN.maxset = 2, 6, 6, 6, 6
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlong = 80, 80, 40


class UserError(Exception):
    """A problem the user can fix (bad path, wrong option, mismatched checkpoint); printed without a traceback."""


class TrainingDiverged(UserError):
    """The training loss became non-finite (too large a learning rate, or bad data)."""


def warn(message: str) -> None:
    """Print ``robustft: warning: <message>`` as one line on stderr; the run goes on."""
    print(f"robustft: warning: {message}", file=sys.stderr, flush=True)


def shown(value: Any) -> str:
    """``repr(value)`` capped in length (long strings and nested containers abbreviated with ``...``): how an error
    message quotes a user's value, however large it is."""
    text = _SHOWN.repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN - 3]}..."
