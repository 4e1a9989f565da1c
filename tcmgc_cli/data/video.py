"""Video decoding behind one small protocol. decord by default, PyAV as fallback; each imported lazily.

This is the only module that imports decord or av.
"""

from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcmgc_cli.errors import VideoDecodeError

VIDEO_EXTENSIONS = frozenset(".mp4 .avi .mov .mkv .webm .mpg .mpeg .m4v .3gp .3g2 .wmv .flv .mts .ts .ogv".split())


class VideoBackend(StrEnum):
    decord = "decord"
    pyav = "pyav"


class VideoReader(Protocol):
    num_frames: int
    fps: float

    def get_frames(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 RGB and their start times in seconds (T,)."""
        ...


class DecordReader:
    def __init__(self, path: Path) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps() or 0.0)

    def get_frames(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        unique = sorted(set(indices))
        batch = self._vr.get_batch(unique).asnumpy()  # (U, H, W, 3)
        times = self._vr.get_frame_timestamp(unique)[:, 0]  # (U,) start seconds
        pos = [unique.index(i) for i in indices]
        return batch[pos], times[pos].astype(np.float32)


class PyAVReader:
    """Decodes every frame once (PyAV cannot count frames reliably without decoding)."""

    def __init__(self, path: Path) -> None:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames: list[np.ndarray] = []
            times: list[float] = []
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time) if frame.time is not None else len(times) / 25.0)
            rate = stream.average_rate
        self._frames = frames
        self._times = np.asarray(times, dtype=np.float32)
        self.num_frames = len(frames)
        self.fps = float(rate) if rate else 0.0

    def get_frames(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([self._frames[i] for i in indices]), self._times[list(indices)]


def _check_file(path: Path) -> None:
    """Problems no decoder can get past: a missing or empty file."""
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes). Re-copy or re-download it.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def open_video(path: Path, backend: VideoBackend = VideoBackend.decord) -> VideoReader:
    """Open a video with one backend, raising VideoDecodeError when it cannot be read."""
    _check_file(path)
    reader: Any
    try:
        reader = DecordReader(path) if backend == VideoBackend.decord else PyAVReader(path)
    except Exception as err:  # decoders raise many types; all mean "cannot read"
        raise VideoDecodeError(f"{path.name}: cannot decode with {backend.value}: {_first_line(err)}") from err
    if reader.num_frames < 1:
        raise VideoDecodeError(f"{path.name}: no decodable frames with {backend.value}")
    return reader  # type: ignore[no-any-return]


def read_video(
    path: Path, choose: Callable[[int, float], list[int]], backend: VideoBackend = VideoBackend.decord
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Decode the frames that `choose(num_frames, fps)` picks: (T, H, W, 3) uint8, start times (T,), indices.

    decord first; when decord cannot open or decode the file (it fails on some frame sizes and codecs), PyAV.
    When every backend fails, one VideoDecodeError says what each reported and how to fix the file.
    """
    _check_file(path)
    errors: list[str] = []
    for b in [backend, VideoBackend.pyav] if backend == VideoBackend.decord else [backend]:
        try:
            reader = open_video(path, b)
            indices = choose(reader.num_frames, reader.fps)
            frames, times = reader.get_frames(indices)
            return frames, times, indices
        except VideoDecodeError as err:
            errors.append(str(err).removeprefix(f"{path.name}: "))
        except Exception as err:  # a decoder failing mid-stream (truncated or corrupt data)
            errors.append(f"decoding failed with {b.value}: {_first_line(err)}")
    tried = "; ".join(dict.fromkeys(errors))
    raise VideoDecodeError(f"{path.name}: {tried}. Re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it.")
