"""Row files: the arrays of a search index on disk, read row by row with positioned reads, and stacked."""

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


class RowFile:
    """The rows of a .npy file on disk, read with positioned reads (`os.preadv`) into fresh arrays.

    A query's candidates are scattered rows of files larger than memory: a memory mapping turns each into a page
    fault with read-ahead around it (measured: seconds for 500 candidates' 12 KB each, on a cold 12 GB file), while
    one read per run of consecutive rows, several in flight, reads just those bytes (tens of milliseconds)."""

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r")  # parses the header; the mapping is dropped at once
        self.path, self.shape, self.dtype, self.offset = path, header.shape, header.dtype, header.offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del header
        self.fd = os.open(path, os.O_RDONLY)  # kept open: the rows stay readable if the file is deleted

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n,) rising row numbers -> (n, *row shape), into `out` when given: one read per run of consecutive
        rows."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype) if out is None else out
        if not len(rows):
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)  # (n, row_bytes)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = list(zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist(), strict=True))

        def one(run: tuple[int, int]) -> None:
            a, b = run
            view = flat[a:b].reshape(-1).data  # (bytes,) a memoryview of the run's rows in `out`
            at, got = self.offset + int(rows[a]) * self.row_bytes, 0
            while got < len(view):  # a positioned read may return fewer bytes than asked
                n = os.preadv(self.fd, [view[got:]], at + got)
                if n == 0:
                    raise OSError(f"{self.path} is shorter than its header says")
                got += n

        if len(runs) > 8:
            list(_readers().map(one, runs))
        else:
            for run in runs:
                one(run)
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.read(np.arange(start, stop, dtype=np.int64))


@functools.cache
def _readers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(16, thread_name_prefix="tcmgc-read")  # reads in flight: disks answer several at once


class Stack:
    """Row files (or arrays in memory) stacked row-wise and read by global row number."""

    def __init__(self, parts: Sequence[RowFile | np.ndarray]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)  # (P,)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows (any shape, int) -> (*rows.shape, *row shape): only those rows are read from the files."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        first = self.parts[0]
        out = np.empty((len(flat), *first.shape[1:]), dtype=first.dtype)
        which = np.searchsorted(self.ends, flat, side="right")  # (n,) the part of each row
        for p in np.unique(which):
            mine = which == p
            local = flat[mine] - (self.ends[p - 1] if p else 0)
            wanted, back = np.unique(local, return_inverse=True)  # rising, each once
            part = self.parts[p]
            got = part.read(wanted) if isinstance(part, RowFile) else part[wanted]
            out[mine] = got[back]
        return out.reshape(*np.shape(rows), *first.shape[1:])
