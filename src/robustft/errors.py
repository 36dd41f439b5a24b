"""User-facing error type: the CLI prints its message as one line and exits non-zero."""

import sys

__all__ = ["UserError", "warn"]


class UserError(Exception):
    """A problem the user can fix (bad path, wrong option, mismatched checkpoint); printed without a traceback."""


def warn(message: str) -> None:
    """Print ``robustft: warning: <message>`` as one line on stderr; the run goes on."""
    print(f"robustft: warning: {message}", file=sys.stderr, flush=True)
