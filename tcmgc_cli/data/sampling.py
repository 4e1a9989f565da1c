"""Pure functions over frame tracks: which frames a track holds, and which of them each scored entry takes.

A video is cached once, as its track: the frames decoded at a fixed rate (`--fps`, 1 by default, the reference's
rate). What the model scores are entries derived from a track:
- a whole video (dataset runs): the reference's input, `entry_rows(n, T)`;
- a window of consecutive track frames (own videos): `window_starts` lays the windows out, each one an entry.
An entry is always T rows of the track (`-1` for a zero-padded slot), so every path builds the same inputs.
"""

import math
from collections.abc import Sequence

import numpy as np

PAD = -1  # an entry slot that holds no frame of the track (zero padding, masked)


def spread(count: int, num: int) -> list[int]:
    """`num` positions spread evenly over `range(count)`: floor(linspace(0, count - 1, num)).

    When count < num, positions repeat (padding by repetition, evenly over the video).
    """
    if count < 1 or num < 1:
        raise ValueError(f"need count >= 1 and num >= 1, got count={count}, num={num}")
    if num == 1:
        return [0]
    return [math.floor(i * (count - 1) / (num - 1)) for i in range(num)]


def fps_candidates(total_frames: int, video_fps: float, fps: float) -> list[int]:
    """The track of a video: the first frame of every 1/fps-second slot, as the reference decodes at 1 fps."""
    step = video_fps / fps if video_fps > 0 else 1.0
    if step <= 1:
        return list(range(total_frames))
    return [math.floor(k * step) for k in range(math.ceil(total_frames / step))]


def entry_rows(count: int, num: int, padding: str = "zero") -> np.ndarray:
    """Which of `count` track frames fill an entry's `num` slots (method doc, section 2): more frames than slots
    take round-down(linspace); fewer keep all of them, then PAD slots ("zero") or spread them over every slot
    ("repeat"). Returns (num,) int64."""
    if count > num or (padding == "repeat" and count > 0):
        return np.asarray(spread(count, num), dtype=np.int64)
    return np.concatenate([np.arange(count), np.full(num - count, PAD)]).astype(np.int64)


def window_starts(count: int, window: int, stride: int) -> list[int]:
    """Starts of `window`-frame windows every `stride` frames over a track of `count` frames, the last one ending at
    its end, so that they cover it without gaps. window 0, or a track no longer than one window: [0], the whole."""
    if window <= 0 or count <= window:
        return [0]
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in (0, window], got stride={stride}, window={window}")
    return [*range(0, count - window, stride), count - window]


def span_of(times: np.ndarray, duration: float, start: int, stop: int) -> tuple[float, float]:
    """Seconds covered by track frames [start, stop): from the first frame's time to the next frame's (the video's
    end after the last frame). times (n,) non-decreasing, the first frame at 0."""
    begin = 0.0 if start == 0 else float(times[start])
    end = float(times[stop]) if stop < len(times) else float(duration)
    return begin, max(end, begin)


def video_duration(frame_times: np.ndarray, fps: float) -> float:
    """The end of the last frame: its start plus one frame (1 / fps, or the median gap between frames)."""
    if len(frame_times) == 0:
        return 0.0
    gaps = np.diff(frame_times)
    step = 1.0 / fps if fps > 0 else (float(np.median(gaps)) if len(gaps) else 0.0)
    return float(frame_times[-1]) + step


def gather_rows(track: np.ndarray, rows: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """An entry's features: track (n, D) rows at `rows` (..., T), `pad` (D,) where a row is PAD -> (..., T, D)."""
    out: np.ndarray = track[np.maximum(rows, 0)]
    out[rows == PAD] = pad
    return out


def windows_of_lengths(lo: int, hi: int, lengths: Sequence[int], min_stride: int = 1) -> list[tuple[int, int]]:
    """Candidate windows [a, b) inside frames [lo, hi): every length in `lengths` that fits, starting every
    max(min_stride, length // 2) frames, the last one of each length ending at `hi`."""
    out: list[tuple[int, int]] = []
    for length in sorted(set(lengths)):
        if length < 1 or length > hi - lo:
            continue
        step = max(min_stride, length // 2)
        starts = [*range(lo, hi - length, step), hi - length]
        out.extend((a, a + length) for a in dict.fromkeys(starts))
    return out
