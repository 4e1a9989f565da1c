"""Pure functions over a video's frames: which decoded frames its track holds (the frames at a fixed rate, `--fps`,
1 by default, the reference's rate), and positions spread evenly. Which track frames an entry takes is
`cache/entries.py`'s."""

import math

import numpy as np


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


def video_duration(frame_times: np.ndarray, fps: float) -> float:
    """The end of the last frame: its start plus one frame (1 / fps, or the median gap between frames)."""
    if len(frame_times) == 0:
        return 0.0
    gaps = np.diff(frame_times)
    step = 1.0 / fps if fps > 0 else (float(np.median(gaps)) if len(gaps) else 0.0)
    return float(frame_times[-1]) + step
