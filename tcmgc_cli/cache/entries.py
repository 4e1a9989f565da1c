"""What an entry is: the unit the model scores, derived from a video's track when read, never stored.

A track is a video's frames at the cache's rate. An entry is T slots filled from track frames [start, stop) of one
video (method doc, section 2):
- a whole video (dataset runs, `window` 0): the reference's input, one entry named like the video;
- a window of consecutive track frames (own videos): windows every `step` frames, the last one ending at the
  video's end, named "<video>@<n>".
More frames than slots take round-down(linspace); fewer keep all of them, then PAD slots ("zero": they hold the
padding feature, the image tower's output for an all-zero normalized frame, and are masked) or spread them over
every slot ("repeat"). Every reader of entries (the cache, training, the search collection and its index, the
rankers, moments) lays slots out with `layout` and fills them with `gather`, so they all build the same inputs.
"""

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tcmgc_cli.config import TrackConfig
from tcmgc_cli.data.sampling import spread

PAD = -1  # a slot that holds no frame of the track (zero padding, masked)


@dataclass(frozen=True)
class Entry:
    """T slots filled from track frames [start, stop) of one video."""

    id: str  # the video's id for a whole video, "<video>@<n>" for its n-th window
    video: str
    start: int
    stop: int


def window_id(video: str, number: int) -> str:
    return f"{video}@{number:04d}"


def window_starts(count: int, window: int, stride: int) -> list[int]:
    """Starts of `window`-frame windows every `stride` frames over a track of `count` frames, the last one ending at
    its end, so that they cover it without gaps. window 0, or a track no longer than one window: [0], the whole."""
    if window <= 0 or count <= window:
        return [0]
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in (0, window], got stride={stride}, window={window}")
    return [*range(0, count - window, stride), count - window]


def video_entries(video: str, count: int, rule: TrackConfig) -> list[Entry]:
    """The entries of a video with `count` track frames: one (the whole video) or its windows."""
    starts = window_starts(count, rule.window, rule.step)
    if len(starts) == 1:
        return [Entry(video, video, 0, count)]
    return [Entry(window_id(video, n), video, s, s + rule.window) for n, s in enumerate(starts)]


def slot_rows(length: int, num_frames: int, padding: str = "zero") -> np.ndarray:
    """Which of an entry's `length` frames fill its `num_frames` slots, (num_frames,) int64: round-down(linspace)
    when there are more frames than slots; else all of them, then PAD ("zero") or spread over every slot ("repeat")."""
    if length > num_frames or (padding == "repeat" and length > 0):
        return np.asarray(spread(length, num_frames), dtype=np.int64)
    return np.concatenate([np.arange(length), np.full(num_frames - length, PAD)]).astype(np.int64)


def layout(starts: np.ndarray, stops: np.ndarray, first_rows: np.ndarray, num_frames: int, padding: str) -> np.ndarray:
    """Rows of a frame table filling the slots of entries, (E, T) int64 (PAD for a padded slot). starts, stops (E,):
    the entries' frames within their tracks; first_rows (E,): the table row of each entry's track's first frame."""
    starts, stops = np.asarray(starts, np.int64), np.asarray(stops, np.int64)
    first = np.asarray(first_rows, np.int64) + starts  # (E,) row of each entry's first frame
    lengths = stops - starts
    rows = np.full((len(lengths), num_frames), PAD, dtype=np.int64)
    for length in np.unique(lengths):  # one layout per length: a few
        mine = lengths == length
        base = slot_rows(int(length), num_frames, padding)  # (T,)
        rows[mine] = np.where(base == PAD, PAD, base[None] + first[mine, None])
    return rows


class Rows(Protocol):
    """A frame table read by row numbers (an on-disk stack of rows)."""

    def take(self, rows: np.ndarray) -> np.ndarray: ...


def gather(
    table: "np.ndarray | Rows", rows: np.ndarray, pad: np.ndarray, dtype: "np.typing.DTypeLike | None" = None
) -> tuple[np.ndarray, np.ndarray]:
    """Entries' inputs: table rows at `rows` (..., T) -> frames (..., T, *row) in `dtype` (default: the table's),
    `pad` in PAD slots, and the mask of real frames (..., T) bool."""
    rows = np.asarray(rows, np.int64)
    mask = rows != PAD
    safe = np.where(mask, rows, 0)
    out = np.array(table[safe] if isinstance(table, np.ndarray) else table.take(safe), dtype=dtype)  # a fresh array
    out[~mask] = pad
    return out, mask


def slot_times(times: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(T,) start seconds of each slot's frame, for rows (T,) of a table whose frames start at `times` (a padded slot:
    the last real frame's)."""
    return np.asarray(times[np.where(rows == PAD, rows.max(), rows)], dtype=np.float64)


def span_of(times: np.ndarray, duration: float, start: int, stop: int) -> tuple[float, float]:
    """Seconds covered by track frames [start, stop): from the first frame's time to the next frame's (the video's
    end after the last frame). times (n,) non-decreasing, the first frame at 0."""
    begin = 0.0 if start == 0 else float(times[start])
    end = float(times[stop]) if stop < len(times) else float(duration)
    return begin, max(end, begin)
