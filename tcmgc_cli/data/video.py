"""Video decoding behind one small protocol. PyAV by default (it decodes only the packets the frames asked for need),
decord as fallback, and the other way round when decord is asked for; each imported lazily.

This is the only module that imports decord or av.
"""

import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcmgc_cli.data.sampling import video_duration
from tcmgc_cli.errors import VideoDecodeError

VIDEO_EXTENSIONS = frozenset(".mp4 .avi .mov .mkv .webm .mpg .mpeg .m4v .3gp .3g2 .wmv .flv .mts .ts .ogv".split())


class VideoBackend(StrEnum):
    decord = "decord"
    pyav = "pyav"


Transform = Callable[[np.ndarray], np.ndarray]  # (n, H, W, 3) uint8 -> (n, S, S, 3) uint8, applied as frames arrive
CHUNK = 16  # frames decoded before the transform shrinks them: bounds the full-resolution frames held at once


class VideoReader(Protocol):
    num_frames: int
    fps: float
    times: np.ndarray  # (num_frames,) start time of every frame in presentation order, seconds (the first is 0)
    failed: set[int]  # frames that could not be decoded by the last get_frames (returned as zeros)

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 RGB (transformed when asked) and their start times in seconds (T,)."""
        ...


class _Collector:
    """Decoded frames of sorted `unique` indices, shrunk by `transform` CHUNK at a time; missing ones become zeros."""

    def __init__(self, unique: list[int], transform: Transform | None) -> None:
        self.unique, self.transform = unique, transform
        self.pos = {idx: n for n, idx in enumerate(unique)}
        self.out: np.ndarray | None = None
        self.pending: list[tuple[int, np.ndarray]] = []
        self.done: set[int] = set()

    def add(self, index: int, frame: np.ndarray) -> None:
        if index in self.pos and index not in self.done:
            self.pending.append((index, frame))
            self.done.add(index)
            if len(self.pending) == CHUNK:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch = np.stack([f for _, f in self.pending])  # (n, H, W, 3)
        small = self.transform(batch) if self.transform else batch
        if self.out is None:
            self.out = np.zeros((len(self.unique), *small.shape[1:]), dtype=small.dtype)
        self.out[[self.pos[i] for i, _ in self.pending]] = small
        self.pending = []

    def result(self, indices: Sequence[int], times: np.ndarray) -> tuple[np.ndarray, np.ndarray, set[int]]:
        self.flush()
        if self.out is None:
            raise VideoDecodeError("no frame could be decoded")
        pos = [self.pos[i] for i in indices]
        return self.out[pos], times[list(indices)].astype(np.float32), set(self.unique) - self.done


def frame_rate(reported: float, times: np.ndarray) -> float:
    """The stream's frame rate; for a stream that reports none (0 fps), the rate its timestamps show (0 when they
    show none either, as for a single frame)."""
    if reported > 0 or len(times) < 2:
        return reported if reported > 0 else 0.0
    step = float(np.median(np.diff(times)))
    return 1.0 / step if step > 0 else 0.0


class DecordReader:
    """decord decodes whole stretches or fails (then PyAV, which tolerates damaged packets, takes over)."""

    def __init__(self, path: Path) -> None:
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._vr)
        starts = np.asarray(self._vr.get_frame_timestamp(range(self.num_frames))[:, 0], dtype=np.float64)
        self.times = starts - starts[0] if len(starts) else starts  # the first frame is time 0, as for PyAV
        self.fps = frame_rate(float(self._vr.get_avg_fps() or 0.0), self.times)
        self.failed: set[int] = set()

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        unique = sorted(set(indices))
        got = _Collector(unique, transform)
        for i in range(0, len(unique), CHUNK):  # a few full-resolution frames at a time
            part = unique[i : i + CHUNK]
            batch = self._vr.get_batch(part).asnumpy()  # (n, H, W, 3); a failure here means: try PyAV
            if batch.ndim != 4 or batch.shape[-1] != 3:
                raise VideoDecodeError(f"decord returned frames of shape {batch.shape[1:]}")
            for idx, frame in zip(part, batch, strict=True):
                got.add(idx, frame)
        frames, times, self.failed = got.result(indices, self.times)
        return frames, times


class PyAVReader:
    """Counts frames from the packets (no decoding), then decodes once, keeping only the frames asked for.

    Decoded frames are matched to indices by timestamp, so a packet that fails to decode costs only its frames. Where
    packets come in presentation order (no B-frames), a packet is decoded only when a frame asked for needs it: the
    packets from the keyframe before each frame asked for up to that frame; the others (after the last frame asked for
    in a group of pictures, up to the next keyframe) are never decoded, which changes no decoded frame.
    """

    def __init__(self, path: Path) -> None:
        import av

        self._path = path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            self._base = float(stream.time_base) if stream.time_base else 0.0
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]  # decode order
            rate = stream.average_rate
        pts = [p for p, _ in packets]
        self._keyframes = np.array([k for _, k in packets], dtype=bool)
        known = [p for p in pts if p is not None]
        self._in_order = len(known) == len(pts) and all(a < b for a, b in zip(known, known[1:], strict=False))
        self.num_frames = len(pts)
        self.fps = float(rate) if rate else 0.0
        self.failed: set[int] = set()
        self._pts: np.ndarray | None = None
        if self._base and pts and all(p is not None for p in pts):
            self._pts = np.sort(np.asarray(pts, dtype=np.int64))
            self.times = (self._pts - self._pts[0]) * self._base  # the first frame is time 0, as for decord
        elif self.fps > 0:
            self.times = np.arange(self.num_frames) / self.fps
        else:
            raise VideoDecodeError(f"{path.name}: no frame rate and no timestamps; re-encode it")
        self.fps = frame_rate(self.fps, self.times)

    def _index(self, frame: Any, n: int) -> int:
        if self._pts is None or frame.pts is None:
            return n
        return int(np.searchsorted(self._pts, frame.pts))

    def needed(self, unique: list[int]) -> np.ndarray | None:
        """(num_frames,) bool: the packets (in decode order) the frames `unique` need, or None: all of them (packets
        out of presentation order, where a frame can need a later packet)."""
        if not self._in_order or not unique:
            return None
        wanted = np.asarray(unique, dtype=np.int64)  # in order, the packet of frame i is packet i
        keys = np.flatnonzero(self._keyframes)
        at = np.searchsorted(keys, wanted, side="right") - 1  # each wanted frame's keyframe (-1: none before it)
        starts = np.where(at >= 0, keys[np.maximum(at, 0)], 0) if len(keys) else np.zeros_like(wanted)
        edges = np.zeros(self.num_frames + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)  # each stretch [keyframe, frame] opens at its keyframe ...
        np.add.at(edges, wanted + 1, -1)  # ... and closes after its frame
        need: np.ndarray = np.cumsum(edges[:-1]) > 0
        return need

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        import av

        unique = sorted(set(indices))
        got, n = _Collector(unique, transform), 0
        need = self.needed(unique)
        with av.open(str(self._path)) as container:
            stream = container.streams.video[0]
            sent = -1  # packets (with data) seen, in decode order
            for packet in container.demux(stream):
                sent += packet.size > 0
                if need is not None and packet.size > 0 and not need[sent]:
                    n += 1  # a frame that is never decoded keeps its number
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:  # a damaged packet: its frames are missing, the rest go on
                    continue
                for frame in frames:
                    index = self._index(frame, n)
                    n += 1
                    if index in got.pos:
                        got.add(index, frame.to_ndarray(format="rgb24"))
                if len(got.done) == len(unique):
                    break
        frames_out, times, self.failed = got.result(indices, self.times)
        return frames_out, times


@functools.cache
def has_decord() -> bool:
    """decord has no wheels for ARM machines; there PyAV decodes everything, with no extra step."""
    return importlib.util.find_spec("decord") is not None


def _check_file(path: Path) -> None:
    """Problems no decoder can get past: a missing or empty file."""
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes). Re-copy or re-download it.")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def open_video(path: Path, backend: VideoBackend = VideoBackend.pyav) -> VideoReader:
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


Choose = Callable[[VideoReader], list[int]]  # the frame indices to decode, non-decreasing


def read_video(
    path: Path, choose: Callable[[int, float], list[int]], backend: VideoBackend = VideoBackend.pyav,
    transform: Transform | None = None,
) -> tuple[np.ndarray, np.ndarray, list[int]]:  # fmt: skip
    """Decode the frames that `choose(num_frames, fps)` picks: (T, H, W, 3) uint8 (or transformed), start times
    (T,), indices. Frames that do not decode are left out. See `read_frames` for the fallback between backends."""
    got = read_frames(path, lambda r: choose(r.num_frames, r.fps), backend, transform)
    return got.frames, got.times, got.indices


@dataclass
class DecodedFrames:
    frames: np.ndarray  # (n, H, W, 3) uint8, or transformed: the chosen frames that decoded, in order
    times: np.ndarray  # (n,) their start times, seconds
    indices: list[int]  # (n,) their frame numbers
    duration: float  # the video's length: the end of its last frame, seconds
    dropped: int  # chosen frames that did not decode (left out)


def read_frames(
    path: Path, choose: Choose, backend: VideoBackend = VideoBackend.pyav, transform: Transform | None = None
) -> DecodedFrames:
    """The frames that `choose(reader)` picks, each decoded once and shrunk by `transform` a few frames at a time:
    memory does not grow with the video's length at full resolution. A frame that does not decode is left out
    (the others keep their true times).

    `backend` first, then the other where it is installed (decord fails on some frame sizes and codecs; PyAV
    tolerates damaged packets). When every backend fails, or no chosen frame decodes, one VideoDecodeError says what
    each reported and how to fix the file.
    """
    _check_file(path)
    errors: list[str] = []
    order = [backend, *(b for b in VideoBackend if b != backend)]
    for b in [b for b in order if b != VideoBackend.decord or has_decord()]:
        try:
            reader = open_video(path, b)
            wanted = choose(reader)
            if not wanted:
                raise VideoDecodeError("no frame to decode at this rate")
            frames, times = reader.get_frames(wanted, transform)
            keep = [n for n, i in enumerate(wanted) if i not in reader.failed]
            if not keep:
                raise VideoDecodeError(f"no frame decodes with {b.value}")
            duration = video_duration(reader.times, reader.fps)
            return DecodedFrames(
                frames[keep], times[keep], [wanted[n] for n in keep], duration, len(wanted) - len(keep)
            )
        except VideoDecodeError as err:
            errors.append(str(err).removeprefix(f"{path.name}: "))
        except Exception as err:  # a decoder failing mid-stream (truncated or corrupt data)
            errors.append(f"decoding failed with {b.value}: {_first_line(err)}")
    tried = "; ".join(dict.fromkeys(errors))
    raise VideoDecodeError(f"{path.name}: {tried}. Re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it.")
