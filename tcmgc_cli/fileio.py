"""Files that are never half-written, folders with one writer, and file-system errors a person can act on.

Every file tcmgc writes for later (cache segments, checkpoints, search indexes, results) goes through
`atomic_path`: it is built under a temporary name, fsynced, and renamed into place, so a reader (or a rerun after
`kill -9`) sees the old file or the new one, never a part. `FolderLock` keeps a second process out of a folder
that one process is writing (an advisory `flock`, released by the kernel when the holder dies).
"""

import contextlib
import errno
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tcmgc_cli.errors import BusyError


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """The temporary name `path` is written under; it ends in the writer's pid (see `stale_temp`)."""
    return path.with_name(f".tmp-{path.name}-{os.getpid()}")


def stale_temp(name: str) -> bool:
    """Whether a temporary file was left by a writer that no longer runs (the pid ends its name)."""
    try:
        os.kill(int(name.rsplit("-", 1)[-1]), 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `path`; on failure removed."""
    tmp = temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class FolderLock:
    """An exclusive, non-blocking lock on `folder/name`; `BusyError(busy)` when another process holds it."""

    def __init__(self, folder: Path, busy: str, name: str = ".lock") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = open(folder / name, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            self._fh = None
            raise BusyError(busy) from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FIXES = {
    errno.ENOSPC: "Free some disk space (or write elsewhere) and rerun: finished work is kept",
    errno.EDQUOT: "Free some of your disk quota (or write elsewhere) and rerun: finished work is kept",
    errno.EFBIG: "The file system refuses files this large: write elsewhere and rerun",
    errno.EROFS: "That location is read-only: pass a writable --cache / --output, or set TCMGC_WORKSPACE",
    errno.EACCES: "You may not write there: pass a writable --cache / --output, or set TCMGC_WORKSPACE",
    errno.EPERM: "You may not write there: pass a writable --cache / --output, or set TCMGC_WORKSPACE",
}


def describe_os_error(err: OSError | RuntimeError, path: Path | str | None = None) -> str:
    """One line: which file, what the system said, and what to do about it.

    HDF5 reports the C errno only inside its message ("errno = 28"), and some of its failures as RuntimeError;
    the errno is read from the message then.
    """
    where = getattr(err, "filename", None) or path
    code = getattr(err, "errno", None)
    if code is None and (found := re.search(r"errno = (\d+)", str(err))):
        code = int(found.group(1))
    strerror = getattr(err, "strerror", None)
    what = strerror or (os.strerror(code) if code else str(err).splitlines()[0] if str(err) else type(err).__name__)
    fix = _FIXES.get(code or -1, "Check the path and rerun: finished work is kept")
    return f"{where}: {what}. {fix}." if where else f"{what}. {fix}."
