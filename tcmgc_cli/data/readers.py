"""The two decoders behind `video.VideoReader`: PyAV (it decodes only the packets the frames asked for need) and
decord. This is the only module that imports av or decord, each lazily.

A reader indexes a whole video once; `reader.stretch(indices)` is a small picklable piece of that index, the frames
from the keyframe before `indices[0]` up to `indices[-1]`, which any process decodes on its own: a long video's
track decodes stretch by stretch, in parallel and ahead of the encoder, in flat memory.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcmgc_cli.errors import VideoDecodeError

Transform = Callable[[np.ndarray], np.ndarray]  # (n, H, W, 3) uint8 -> (n, S, S, 3) uint8, applied as frames arrive
CHUNK = 16  # frames decoded before the transform shrinks them: bounds the full-resolution frames held at once


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

    def result(self, indices: Sequence[int], times: np.ndarray, lo: int = 0) -> tuple[np.ndarray, np.ndarray, set[int]]:
        """(frames, their start times, the indices that did not decode); `times` covers frames lo, lo + 1, ..."""
        self.flush()
        if self.out is None:
            raise VideoDecodeError("no frame could be decoded")
        pos = [self.pos[i] for i in indices]
        return self.out[pos], times[[i - lo for i in indices]].astype(np.float32), set(self.unique) - self.done


def frame_rate(reported: float, times: np.ndarray) -> float:
    """The stream's frame rate; for a stream that reports none (0 fps), the rate its timestamps show (0 when they
    show none either, as for a single frame)."""
    if reported > 0 or len(times) < 2:
        return reported if reported > 0 else 0.0
    step = float(np.median(np.diff(times)))
    return 1.0 / step if step > 0 else 0.0


def _open_decord(path: Path) -> Any:
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _decord_frames(vr: Any, got: _Collector) -> None:
    """decord decodes whole stretches or fails (then PyAV, which tolerates damaged packets, takes over)."""
    for i in range(0, len(got.unique), CHUNK):  # a few full-resolution frames at a time
        part = got.unique[i : i + CHUNK]
        batch = vr.get_batch(part).asnumpy()  # (n, H, W, 3); a failure here means: try PyAV
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise VideoDecodeError(f"decord returned frames of shape {batch.shape[1:]}")
        for idx, frame in zip(part, batch, strict=True):
            got.add(idx, frame)


@dataclass
class DecordStretch:
    """Frames lo .. lo + len(times) - 1 of a video, for decord (which seeks by itself)."""

    path: Path
    lo: int
    times: np.ndarray  # (hi - lo,) start seconds
    failed: set[int] = field(default_factory=set)

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        got = _Collector(sorted(set(indices)), transform)
        _decord_frames(_open_decord(self.path), got)
        frames, times, self.failed = got.result(indices, self.times, self.lo)
        return frames, times


class DecordReader:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._vr = _open_decord(path)
        self.num_frames = len(self._vr)
        starts = np.asarray(self._vr.get_frame_timestamp(range(self.num_frames))[:, 0], dtype=np.float64)
        self.times = starts - starts[0] if len(starts) else starts  # the first frame is time 0, as for PyAV
        self.fps = frame_rate(float(self._vr.get_avg_fps() or 0.0), self.times)
        self.failed: set[int] = set()

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        got = _Collector(sorted(set(indices)), transform)
        _decord_frames(self._vr, got)
        frames, times, self.failed = got.result(indices, self.times)
        return frames, times

    def stretch(self, indices: Sequence[int]) -> DecordStretch:
        lo, hi = min(indices), max(indices) + 1
        return DecordStretch(self._path, lo, self.times[lo:hi])


def needed_packets(keyframes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """(n,) bool over packets in decode order, where packet i is frame i (no B-frames): the packets the frames
    `wanted` (rising) need, from the keyframe before each up to it."""
    keys = np.flatnonzero(keyframes)
    at = np.searchsorted(keys, wanted, side="right") - 1  # each wanted frame's keyframe (-1: none before it)
    starts = np.where(at >= 0, keys[np.maximum(at, 0)], 0) if len(keys) else np.zeros_like(wanted)
    edges = np.zeros(len(keyframes) + 1, dtype=np.int64)
    np.add.at(edges, starts, 1)  # each stretch [keyframe, frame] opens at its keyframe ...
    np.add.at(edges, wanted + 1, -1)  # ... and closes after its frame
    need: np.ndarray = np.cumsum(edges[:-1]) > 0
    return need


@dataclass
class PyAVStretch:
    """Frames lo .. hi - 1 of a video, where frame lo is a keyframe (or the first frame): decoding seeks to it and
    stops after frame hi - 1. Frames are matched to indices by exact timestamp, so a packet that fails to decode
    costs only its frames; `need` (streams without B-frames) skips the packets no frame asked for needs, and the
    decoder skips the frames no other frame refers to (B-frames, mostly) unless they are asked for."""

    path: Path
    lo: int
    pts: np.ndarray | None  # (hi - lo,) rising timestamps of the frames; None: the stream has none (then lo is 0)
    need: np.ndarray | None  # (hi - lo,) bool, packet i is frame lo + i; None: every packet is decoded
    times: np.ndarray  # (hi - lo,) start seconds
    failed: set[int] = field(default_factory=set)
    packets: int = 0  # packets the last get_frames gave the decoder
    decoded: int = 0  # frames it decoded (fewer where it skipped frames no other refers to)

    def _index(self, frame_pts: int | None, n: int) -> int | None:
        """The frame number of a decoded frame (None: outside the stretch); `n` counts frames where there are no
        timestamps."""
        if self.pts is None or frame_pts is None:
            return n if self.lo == 0 else None
        pos = int(np.searchsorted(self.pts, frame_pts))
        return self.lo + pos if pos < len(self.pts) and self.pts[pos] == frame_pts else None

    def _past(self, pts: int | None) -> bool:
        return self.pts is not None and pts is not None and pts > self.pts[-1]

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        import av

        got, n = _Collector(sorted(set(indices)), transform), 0
        self.packets = self.decoded = 0
        kept = set(self.pts[[i - self.lo for i in got.unique]].tolist()) if self.pts is not None else None
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            if self.lo > 0 and self.pts is not None:  # to the keyframe at frame lo (closed-GOP decoding from there)
                container.seek(int(self.pts[0]), stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                if self.need is not None and packet.size > 0:  # a flush packet (size 0) drains the decoder
                    at = self._index(packet.pts, 0)
                    if at is None and self._past(packet.pts):
                        break  # no later packet holds a frame of the stretch
                    if at is None or not self.need[at - self.lo]:
                        continue
                self.packets += packet.size > 0
                if kept is not None and packet.size > 0:  # a frame no other frame refers to is decoded only if kept
                    stream.codec_context.skip_frame = "DEFAULT" if packet.pts in kept else "NONREF"
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:  # a damaged packet: its frames are missing, the rest go on
                    continue
                past = False
                self.decoded += len(frames)
                for frame in frames:
                    index = self._index(frame.pts, n)
                    n += 1
                    if index in got.pos:  # converted only when kept
                        got.add(index, frame.to_ndarray(format="rgb24"))
                    past = past or self._past(frame.pts)  # frames come out in presentation order
                if past or len(got.done) == len(got.unique):
                    break
        frames_out, times, self.failed = got.result(indices, self.times, self.lo)
        return frames_out, times


class PyAVReader:
    """Counts frames from the packets (no decoding), then decodes each stretch once, keeping only the frames asked
    for. Where packets come in presentation order (no B-frames), a packet is decoded only when a frame asked for
    needs it: the packets from the keyframe before each frame asked for up to that frame; the others (after the
    last frame asked for in a group of pictures, up to the next keyframe) are never decoded, which changes no
    decoded frame."""

    def __init__(self, path: Path) -> None:
        import av

        self._path = path
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = float(stream.time_base) if stream.time_base else 0.0
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size > 0]  # decode order
            rate = stream.average_rate
        pts = [p for p, _ in packets]
        self._keyframes = np.array([k for _, k in packets], dtype=bool)  # (n,) in decode order
        self.num_frames = len(pts)
        self.fps = float(rate) if rate else 0.0
        self.failed: set[int] = set()
        self._pts: np.ndarray | None = None
        self._key_pts = np.zeros(0, dtype=np.int64)
        if base and pts and all(p is not None for p in pts):
            self._pts = np.sort(np.asarray(pts, dtype=np.int64))  # (n,) presentation order
            self._key_pts = np.sort(np.asarray([p for p, k in packets if k], dtype=np.int64))
            self.times = (self._pts - self._pts[0]) * base  # the first frame is time 0, as for decord
        elif self.fps > 0:
            self.times = np.arange(self.num_frames) / self.fps
        else:
            raise VideoDecodeError(f"{path.name}: no frame rate and no timestamps; re-encode it")
        self._in_order = self._pts is not None and bool(np.all(np.diff(np.asarray(pts, dtype=np.int64)) > 0))
        self.fps = frame_rate(self.fps, self.times)

    def _keyframe_before(self, index: int) -> int:
        """The frame number of the last keyframe at or before frame `index` (0 when none is, or no timestamps)."""
        if self._pts is None or not len(self._key_pts):
            return 0
        k = int(np.searchsorted(self._key_pts, self._pts[index], side="right")) - 1
        return int(np.searchsorted(self._pts, self._key_pts[k])) if k >= 0 else 0

    def stretch(self, indices: Sequence[int]) -> PyAVStretch:
        unique = sorted(set(indices))
        lo, hi = self._keyframe_before(unique[0]), unique[-1] + 1
        need = None
        if self._in_order:  # packet i is frame i
            need = needed_packets(self._keyframes[lo:hi], np.asarray(unique, dtype=np.int64) - lo)
        pts = self._pts[lo:hi] if self._pts is not None else None
        return PyAVStretch(self._path, lo, pts, need, self.times[lo:hi])

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        part = self.stretch(indices)
        out = part.get_frames(indices, transform)
        self.failed = part.failed
        return out
