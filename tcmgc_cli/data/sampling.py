"""Pure functions that choose which frames of a video to decode."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcmgc_cli.config import SamplingConfig


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
    """The first frame of every 1/fps-second slot, as the reference decodes at 1 fps."""
    step = video_fps / fps if video_fps > 0 else 1.0
    if step <= 1:
        return list(range(total_frames))
    return [math.floor(k * step) for k in range(math.ceil(total_frames / step))]


def sample_frame_indices(total_frames: int, video_fps: float, cfg: SamplingConfig) -> list[int]:
    """Frame indices to decode, non-decreasing: `cfg.num_frames` of them, or, with zero padding, fewer when the
    video has fewer candidates (the caller pads: method doc, section 2)."""
    candidates = (
        list(range(total_frames)) if cfg.strategy == "uniform" else fps_candidates(total_frames, video_fps, cfg.fps)
    )
    if cfg.padding == "zero" and len(candidates) <= cfg.num_frames:
        return candidates
    return [candidates[i] for i in spread(len(candidates), cfg.num_frames)]


def clip_spans(duration: float, window: float, stride: float, slack: float = 0.02) -> list[tuple[float, float]]:
    """Windows of `window` seconds every `stride` seconds over [0, duration], the last one ending at the end, so that
    they cover the video without gaps (stride <= window). A video no longer than one window, or window 0, is one
    span (0, duration). A last step longer than the stride by at most `slack` strides (and the overlap) adds no window
    of its own: a duration a few hundredths of a second longer (decoders measure it differently) makes no near-copy."""
    if window <= 0 or duration <= window:
        return [(0.0, duration)]
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in (0, window], got stride={stride}, window={window}")
    slack = min(slack, (window - stride) / stride) + 1e-9  # never more than the overlap can absorb: no gaps
    count = max(1, math.ceil((duration - window) / stride - slack))  # windows that start before the last one
    spans = [(k * stride, k * stride + window) for k in range(count)]
    return [*spans, (duration - window, duration)]


def clip_frame_indices(frame_times: Sequence[float], start: float, end: float, num: int) -> list[int]:
    """`num` frames of one clip: the frame shown at each of `num` evenly spaced times start + j (end - start) / num
    (the last frame starting at or before that time). frame_times: every frame's start time, non-decreasing."""
    times = np.asarray(frame_times, dtype=np.float64)
    targets = start + (end - start) * np.arange(num) / num
    return np.clip(np.searchsorted(times, targets + 1e-9, side="right") - 1, 0, len(times) - 1).tolist()  # type: ignore[no-any-return]


def video_duration(frame_times: np.ndarray, fps: float) -> float:
    """The end of the last frame: its start plus one frame (1 / fps, or the median gap between frames)."""
    if len(frame_times) == 0:
        return 0.0
    gaps = np.diff(frame_times)
    step = 1.0 / fps if fps > 0 else (float(np.median(gaps)) if len(gaps) else 0.0)
    return float(frame_times[-1]) + step


@dataclass
class ClipPlan:
    """Which frames of a video to decode: one clip over the whole video (the `sampling` of a whole video), or, for
    a video longer than `window` seconds, overlapping clips every `stride` seconds of num_frames frames each."""

    sampling: SamplingConfig
    window: float = 0.0  # 0: one clip per video
    stride: float = 0.0
    spans: list[tuple[float, float]] = field(default_factory=list)  # filled by __call__: (start, end) seconds

    def __call__(self, reader: Any) -> list[list[int]]:
        """reader: has num_frames, fps and times (every frame's start, seconds) -> frame indices of each clip."""
        self.spans = clip_spans(video_duration(reader.times, reader.fps), self.window, self.stride)
        if len(self.spans) == 1:
            return [sample_frame_indices(reader.num_frames, reader.fps, self.sampling)]
        return [clip_frame_indices(reader.times, start, end, self.sampling.num_frames) for start, end in self.spans]
