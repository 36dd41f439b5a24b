"""User-facing error type: the CLI prints its message as one line and exits non-zero."""

__all__ = ["UserError"]


class UserError(Exception):
    """A problem the user can fix (bad path, wrong option, mismatched checkpoint); printed without a traceback."""
