"""Reading the files of a data folder: regular files only, and never past a size limit.

Every file robustft opens from a user's data (image-folder files and zip members, ``.npz`` archives, class lists,
its own decode cache) is opened here. A size on disk is only a first check: a FIFO, a device or a link to one
reports 0 and would block forever or read without end, so anything that is not a regular file once links are
followed is refused as it is opened (without blocking), and a whole-file read stops one byte past its limit.
"""

import os
import stat
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import scipy.io

from ..errors import UserError
from .limits import DecodeLimits

__all__ = ["load_mat", "open_regular", "printable", "read_file", "read_member", "read_text"]

_KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def printable(path: str | os.PathLike) -> str:
    """``path`` with bytes that are not UTF-8 (decoded by Python as lone surrogates) shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading; a one-line UserError unless it is (a link to) a regular file, the
    OSError of a failed open (a missing file, no permission) as it is, for the caller to say what the file was."""
    # O_NONBLOCK: a FIFO opens at once instead of waiting for a writer; regular files ignore the flag
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode  # of the file the links lead to, as opened: no race with a later swap
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "a special file")
        target = os.path.realpath(path)
        link = f" (a link to {printable(target)})" if target != os.path.abspath(path) else ""
        raise UserError(f"{printable(path)}{link} is {kind}, not a regular file; robustft reads data only from "
                        f"regular files: remove it or replace it with the file itself")
    return os.fdopen(fd, "rb")


def _read_capped(f: BinaryIO, what: str, limits: DecodeLimits, *, zipped: bool) -> bytes:
    """All of ``f``, read no further than one byte past ``limits.max_file_mb``: a size stated beforehand may lie."""
    data = f.read(limits.max_file_bytes + 1)
    limits.check_file(what, len(data), zipped=zipped)
    return data


def read_file(path: Path, what: str, limits: DecodeLimits) -> bytes:
    """The bytes of a regular file, refused over ``limits.max_file_mb`` (``what`` names it in errors)."""
    with open_regular(path) as f:
        limits.check_file(what, os.fstat(f.fileno()).st_size, zipped=False)
        return _read_capped(f, what, limits, zipped=False)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str, limits: DecodeLimits) -> bytes:
    """The decompressed bytes of one zip member, refused over ``limits.max_file_mb`` before anything is inflated."""
    limits.check_file(what, info.file_size, zipped=True)  # the central directory's size: nothing opened yet
    with archive.open(info) as f:
        return _read_capped(f, what, limits, zipped=True)


def read_text(path: Path, limits: DecodeLimits = DecodeLimits()) -> str:
    """A UTF-8 text file (a class list, an annotation list), refused over ``limits.max_file_mb``."""
    return read_file(path, str(path), limits).decode()


def load_mat(path: Path, **options: Any) -> dict[str, Any]:
    """A MATLAB ``.mat`` file (``scipy.io.loadmat`` with ``options``), opened as a regular file."""
    with open_regular(path) as f:
        return scipy.io.loadmat(f, **options)
