"""The collection a search reads: a cache's videos, their track frames as the ranker sees them, and their entries
(`cache/entries.py` lays out every entry's slots, as everywhere else).

V videos, F track frames, E entries of T slots, D dims. Frames (and the temporal features of TC-MGC) stay on disk
and are read row by row for a query's candidates; the tables are in memory. The built-in index's parts give a
collection with the frames as the ranker sees them and the temporal features computed once (`parts.join`); a cache
alone gives one that reads the cache's own frames (`from_cache`), whose temporal features are computed per query.
"""

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cache.entries import PAD, Rows, gather, layout, slot_times, span_of
from tcmgc_cli.cache.frames import FrameTable


@dataclass
class Collection:
    """The cache's videos and entries as a search reads them. Built by keyword."""

    videos: list[str]
    paths: list[str]
    durations: np.ndarray  # (V,) seconds
    offsets: np.ndarray  # (V,) int64 first row of each video in `frames`
    counts: np.ndarray  # (V,) int64 track frames of each video
    times: np.ndarray  # (F,) float64 frame start seconds, within each video
    frames: Rows  # (F, D) frame features as the ranker sees them (float16 in the built-in index's parts)
    pad: np.ndarray  # (D,) float32 what a padded slot holds
    entry_ids: list[str]
    entry_video: np.ndarray  # (E,) int64 index into videos
    entry_start: np.ndarray  # (E,) int64 first track frame, within the video
    entry_stop: np.ndarray  # (E,) int64 one past the last
    num_frames: int  # T
    padding: str  # "zero" or "repeat"
    temporal: Rows | None = None  # (E_all, T, D) float16 each entry's temporal-encoder output (kept), else None
    temporal_rows: np.ndarray | None = None  # (E,) int64 row of each entry in `temporal`
    uids: list[str] = field(default_factory=list)  # (V,) each video's track uid (what a coarse store keys on)
    exact: Rows | None = None  # (F, D) float32 frames the temporal features are computed from, where `frames` is a
    # float16 view of them (a collection read from the cache: it sees what the built-in index's parts would hold)
    rows: torch.Tensor = field(init=False, repr=False)  # (E, T) int32 rows of `frames` filling each entry's slots

    def __post_init__(self) -> None:
        first = self.offsets[self.entry_video]  # (E,) row of each entry's video's first frame
        rows = layout(self.entry_start, self.entry_stop, first, self.num_frames, self.padding)  # (E, T)
        self.rows = torch.from_numpy(rows.astype(np.int32))

    @classmethod
    def from_cache(cls, cache: FeatureCache, pad: np.ndarray) -> "Collection":
        """The cache's live videos and entries, frames read from the cache itself (no copy), `pad` (D,) in padded
        slots."""
        videos = cache.videos()
        table = FrameTable(cache, videos)  # float32, as extracted
        times = cache.times(videos)
        number = {v: i for i, v in enumerate(videos)}
        entries = cache.entries()
        rule = cache.settings.tracks
        return cls(
            videos=videos, paths=[cache.video_path(v) for v in videos],
            durations=np.array([cache.duration(v) for v in videos], dtype=np.float64), offsets=table.offsets,
            counts=table.counts, times=np.concatenate([times[v] for v in videos]) if videos else np.zeros(0),
            frames=HalfRows(table), pad=np.asarray(pad, np.float32), entry_ids=[e.id for e in entries],
            entry_video=np.array([number[e.video] for e in entries], dtype=np.int64),
            entry_start=np.array([e.start for e in entries], dtype=np.int64),
            entry_stop=np.array([e.stop for e in entries], dtype=np.int64), num_frames=rule.num_frames,
            padding=rule.padding, uids=[cache.uid(v) for v in videos], exact=table,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.entry_ids)

    @functools.cached_property
    def video_paths(self) -> dict[str, str]:
        """video id -> its file, from the cache."""
        return dict(zip(self.videos, self.paths, strict=True))

    def window_rows(self, video: int, start: int, stop: int) -> np.ndarray:
        """(T,) rows of `frames` filling the slots of frames [start, stop) of a video (PAD: a padded slot)."""
        first = self.offsets[video : video + 1]
        rows: np.ndarray = layout(np.array([start]), np.array([stop]), first, self.num_frames, self.padding)[0]
        return rows

    def gather(self, rows: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (n, T, D) float32 of rows (n, T) of `frames` (of `exact`'s, asked for and kept), the padding
        feature where a row is PAD, and the mask of real frames (n, T)."""
        table = self.exact if exact and self.exact is not None else self.frames
        frames, mask = gather(table, rows.numpy(), self.pad, np.float32)  # (n, T, D), (n, T)
        return torch.from_numpy(frames), torch.from_numpy(mask)

    def inputs(self, windows: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of windows (video, start, stop): frames (n, T, D) float32 and the real-frame mask (n, T)."""
        if not windows:
            return torch.zeros(0, self.num_frames, len(self.pad)), torch.zeros(0, self.num_frames, dtype=torch.bool)
        return self.gather(torch.from_numpy(np.stack([self.window_rows(*w) for w in windows])))

    def entry_inputs(self, idx: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of entries idx (n,): frames (n, T, D) float32 and the real-frame mask (n, T)."""
        return self.gather(self.rows[idx].long(), exact)

    def masks(self, idx: torch.Tensor) -> torch.Tensor:
        """(n, T) bool: the entries' slots that hold a real frame."""
        return self.rows[idx] != PAD

    def track_frames(self, video: int) -> torch.Tensor:
        """(n, D) float32: a video's track."""
        off = int(self.offsets[video])
        return torch.from_numpy(self.frames.take(np.arange(off, off + int(self.counts[video])))).float()

    def span(self, video: int, start: int, stop: int) -> tuple[float, float]:
        """Seconds covered by frames [start, stop) of a video's track."""
        off = int(self.offsets[video])
        return span_of(self.times[off : off + int(self.counts[video])], float(self.durations[video]), start, stop)

    def entry_times(self, entry: int) -> np.ndarray:
        """(T,) start seconds of an entry's slots (a padded slot: its last real frame's)."""
        return slot_times(self.times, self.rows[entry].long().numpy())

    def entries_of(self, video: int) -> np.ndarray:
        """The entries of one video, in time order."""
        return np.flatnonzero(self.entry_video == video)


class HalfRows:
    """A frame table seen in float16, as the built-in index's parts hold it: a search on an engine scores exactly what
    a search on the built-in index scores."""

    def __init__(self, table: Rows) -> None:
        self.table = table

    def take(self, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.table.take(rows).astype(np.float16)
        return out
