"""Pure functions that choose which frames of a video to decode."""

import math

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
    """Frame indices to decode, always `cfg.num_frames` of them, non-decreasing."""
    if cfg.strategy == "uniform":
        return spread(total_frames, cfg.num_frames)
    candidates = fps_candidates(total_frames, video_fps, cfg.fps)
    return [candidates[i] for i in spread(len(candidates), cfg.num_frames)]
