"""The cache's live tracks as one frame table, read row by row where the segments keep them: what a search reads when
no index of its own copies the frames (a coarse stage on a vector engine), shared read-only by any number of
processes."""

from collections.abc import Sequence

import numpy as np

from tcmgc_cli.cache.reader import FeatureCache
from tcmgc_cli.cache.segments import damaged_message
from tcmgc_cli.errors import CacheError


class FrameTable:
    """Rows 0..F-1: the frames of `videos`, one video after another (`offsets`, `counts`); `take(rows)` reads only
    those rows, one read per run of consecutive rows of a segment."""

    def __init__(self, cache: FeatureCache, videos: Sequence[str], column: str = "features") -> None:
        segments = cache.segment_tables()
        self.cache, self.column = cache, column
        self.videos = list(videos)
        where = [cache.location(v) for v in self.videos]  # (segment position, first row there, count) each
        self.segment = np.array([w[0] for w in where], dtype=np.int64)  # (V,)
        self.first = np.array([w[1] for w in where], dtype=np.int64)  # (V,) row of the video's first frame there
        self.counts = np.array([w[2] for w in where], dtype=np.int64)  # (V,)
        self.offsets = np.cumsum(self.counts) - self.counts  # (V,) its first row in this table
        self.paths = [s.path for s in segments]
        ds = cache.file(self.paths[0])[f"frames/{column}"] if self.paths else None
        self.row_shape = tuple(ds.shape[1:]) if ds is not None else ()
        self.dtype = ds.dtype if ds is not None else np.float32

    def __len__(self) -> int:
        return int(self.counts.sum())

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows (any shape, int) -> (*rows.shape, *row shape)."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        wanted, back = np.unique(flat, return_inverse=True)  # rising, each once
        video = np.searchsorted(self.offsets, wanted, side="right") - 1  # (n,) the video of each row
        seg = self.segment[video]
        local = self.first[video] + wanted - self.offsets[video]  # (n,) rows within the segment
        got = np.empty((len(wanted), *self.row_shape), dtype=self.dtype)
        for s in np.unique(seg):
            mine = np.flatnonzero(seg == s)
            got[mine] = self._read(int(s), local[mine], [self.videos[v] for v in video[mine]])
        return got[back].reshape(*np.shape(rows), *self.row_shape)

    def _read(self, segment: int, rows: np.ndarray, videos: list[str]) -> np.ndarray:
        """Rising rows of one segment, one read per run of consecutive rows."""
        ds = self.cache.file(self.paths[segment])[f"frames/{self.column}"]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        parts = []
        for a, b in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist(), strict=True):
            try:
                parts.append(ds[int(rows[a]) : int(rows[b - 1]) + 1])
            except OSError as err:  # HDF5's checksum, or a damaged chunk
                detail = f"{self.column}: {str(err).splitlines()[0]}"
                raise CacheError(damaged_message(self.cache.path, videos[a:b], detail)) from None
        return np.concatenate(parts) if parts else np.empty((0, *self.row_shape), self.dtype)
