"""File writes: atomic (a reader never sees a half-written checkpoint or results file), checked before the work
starts, failing with one clear line on a full or read-only disk; and an exclusive lock for a run directory."""

import errno
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

__all__ = ["atomic_write", "atomic_save", "atomic_write_json", "WriteError", "check_writable", "check_not_input",
           "locked", "remove_stale_temporaries"]

_UMASK = os.umask(0)
os.umask(_UMASK)
_TMP_SUFFIX = ".tmp"
# what atomic_write's mkstemp names a temporary: "." + the target's name + "." + 8 random characters + _TMP_SUFFIX
_TEMPORARY = re.compile(rf"\..+\.[a-z0-9_]{{8}}{re.escape(_TMP_SUFFIX)}")
# what torch.save raises (a RuntimeError from its C++ zip writer) when the disk fills up or the file vanishes
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter", "inline_container", "file write failed", "unexpected pos")


class WriteError(UserError, OSError):
    """A file could not be written (disk full, read-only, not a directory): a user error that is also an OSError."""


def _write_error(path: Path, err: BaseException) -> WriteError:
    """One line saying what could not be written, why, and what to do."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
    if isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ENOSPC:
        reason = f"{reason} (is the disk full?)" if "disk" not in reason.lower() else reason
    return WriteError(f"cannot write {path}: {reason}; free some space or choose a writable location")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise _write_error(path, e) from None
    except RuntimeError as e:
        _discard(tmp)
        if any(s in str(e) for s in _TORCH_WRITE_FAILURES):
            raise _write_error(path, e) from None
        raise
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    """Remove a temporary file if it was created (never fails)."""
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def _torch_save(obj: Any, tmp: str) -> None:
    """``torch.save`` through a file object: the archive's root folder is then always ``archive`` (given a path,
    torch names it after the random temporary file), so equal tensors give byte-identical files."""
    with open(tmp, "wb") as f:
        torch.save(obj, f)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically, byte-reproducibly."""
    return atomic_write(path, lambda tmp: _torch_save(obj, tmp))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
    return atomic_write(path, write)


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str) -> None:
    """Refuse an output path that is one of the command's ``inputs`` (or an existing file inside an input
    directory): writing it would destroy what the command read."""
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if target == source or (source.is_dir() and source in target.parents and target.exists()):
            inside = f"a file of {given}" if target != source else str(given)
            raise UserError(f"{flag} {out} would overwrite {inside}, an input of this command; write it elsewhere")


def check_writable(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Before any work: make sure ``path`` (a file, or a ``directory``) can be created, by creating and removing a
    probe file in its nearest existing ancestor. Nothing is left behind."""
    path = Path(path)
    if path.exists() and not directory and path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file name")
    ancestor = path if directory else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a directory; choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".robustft-probe.", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {path}: {ancestor} is not writable ({e.strerror}); choose a writable "
                        f"location") from None


def remove_stale_temporaries(directories: Iterable[Path]) -> list[Path]:
    """Delete the temporary files of atomic writes (``.NAME.XXXXXXXX.tmp``, as ``atomic_write`` names them) that a
    killed process left directly in ``directories``; nothing else, and nothing below them.

    Only safe while holding the directories' lock: no other writer can be mid-write there."""
    stale = [p for d in directories if d.is_dir() for p in d.iterdir()
             if _TEMPORARY.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def locked(lock_path: Path, what: str = "directory") -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (its directory is created) for the block; a second holder is refused
    at once. The kernel releases the lock when the process ends, however it ends, so a killed run never blocks."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            who = f"pid {holder}" if holder else "starting: its pid is not written yet"
            raise UserError(f"{what} {lock_path.parent} is in use by another robustft process ({who}); wait "
                            f"for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
