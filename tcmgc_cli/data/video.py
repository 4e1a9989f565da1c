"""Video decoding behind one small protocol (the readers are `readers.py`'s): PyAV by default (it decodes only the
packets the frames asked for need), decord as fallback, and the other way round when decord is asked for.
"""

import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tcmgc_cli.data.readers import DecordReader, PyAVReader, Transform
from tcmgc_cli.data.sampling import video_duration
from tcmgc_cli.errors import VideoDecodeError

VIDEO_EXTENSIONS = frozenset(".mp4 .avi .mov .mkv .webm .mpg .mpeg .m4v .3gp .3g2 .wmv .flv .mts .ts .ogv".split())


class VideoBackend(StrEnum):
    decord = "decord"
    pyav = "pyav"


class VideoReader(Protocol):
    num_frames: int
    fps: float
    times: np.ndarray  # (num_frames,) start time of every frame in presentation order, seconds (the first is 0)
    failed: set[int]  # frames that could not be decoded by the last get_frames (returned as zeros)

    def get_frames(self, indices: Sequence[int], transform: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 RGB (transformed when asked) and their start times in seconds (T,)."""
        ...

    def stretch(self, indices: Sequence[int]) -> "Stretch":
        """The frames `indices` (rising) as a small picklable piece of the index that decodes on its own."""
        ...


class Stretch(Protocol):
    failed: set[int]

    def get_frames(
        self, indices: Sequence[int], transform: Transform | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


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
class Frames:
    frames: np.ndarray  # (n, H, W, 3) uint8, or transformed: the chosen frames that decoded, in order
    times: np.ndarray  # (n,) their start times, seconds
    indices: list[int]  # (n,) their frame numbers
    dropped: int  # chosen frames that did not decode (left out)


@dataclass
class Later:
    """Frames of a track still to decode: one stretch of the video's index (picklable), for `read_later`."""

    path: Path
    backend: VideoBackend
    indices: list[int]
    stretch: Stretch


@dataclass
class DecodedFrames(Frames):
    duration: float = 0.0  # the video's length: the end of its last frame, seconds
    later: list[Later] = field(default_factory=list)  # with `stretch`: the track's stretches not decoded yet


def _backends(first: VideoBackend) -> list[VideoBackend]:
    order = [first, *(b for b in VideoBackend if b != first)]
    return [b for b in order if b != VideoBackend.decord or has_decord()]


def _decoded(got: VideoReader | Stretch, indices: list[int], transform: Transform | None) -> Frames:
    frames, times = got.get_frames(indices, transform)
    keep = [n for n, i in enumerate(indices) if i not in got.failed]
    return Frames(frames[keep], times[keep], [indices[n] for n in keep], len(indices) - len(keep))


def _stretches(wanted: list[int], size: int | None) -> list[list[int]]:
    """`wanted` in stretches of `size`, the first of half that (what the encoder waits for before it starts); one
    stretch when `wanted` fits in one."""
    if not size or len(wanted) <= size:
        return [wanted]
    first = max(1, size // 2)
    return [wanted[:first], *(wanted[i : i + size] for i in range(first, len(wanted), size))]


def read_frames(
    path: Path, choose: Choose, backend: VideoBackend = VideoBackend.pyav, transform: Transform | None = None,
    stretch: int | None = None,
) -> DecodedFrames:  # fmt: skip
    """The frames that `choose(reader)` picks, each decoded once and shrunk by `transform` a few frames at a time:
    memory does not grow with the video's length at full resolution. A frame that does not decode is left out
    (the others keep their true times).

    `backend` first, then the other where it is installed (decord fails on some frame sizes and codecs; PyAV
    tolerates damaged packets). When every backend fails, or no chosen frame decodes, one VideoDecodeError says what
    each reported and how to fix the file.

    stretch: decode only the first stretch of the frames chosen (half of `stretch` frames, or the whole track
    where it fits in `stretch`; the first stretch where any frame decodes); the others, of `stretch` frames, come
    back undecoded as `later`, for `read_later` in any process.
    """
    _check_file(path)
    errors: list[str] = []
    for b in _backends(backend):
        try:
            reader = open_video(path, b)
            wanted = choose(reader)
            if not wanted:
                raise VideoDecodeError("no frame to decode at this rate")
            pieces = _stretches(wanted, stretch)
            dropped = 0
            for k, piece in enumerate(pieces):
                got = _decoded(reader, piece, transform)
                dropped += got.dropped
                if got.indices:
                    later = [Later(path, b, p, reader.stretch(p)) for p in pieces[k + 1 :]]
                    duration = video_duration(reader.times, reader.fps)
                    return DecodedFrames(got.frames, got.times, got.indices, dropped, duration, later)
            raise VideoDecodeError(f"no frame decodes with {b.value}")
        except VideoDecodeError as err:
            errors.append(str(err).removeprefix(f"{path.name}: "))
        except Exception as err:  # a decoder failing mid-stream (truncated or corrupt data)
            errors.append(f"decoding failed with {b.value}: {_first_line(err)}")
    tried = "; ".join(dict.fromkeys(errors))
    raise VideoDecodeError(f"{path.name}: {tried}. Re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it.")


def read_later(later: Later, transform: Transform | None = None) -> Frames:
    """One stretch of a track: with its own backend, else (it fails, or none of its frames decodes) with the other
    where installed; frames neither decodes are left out (all of them: `frames` is then empty)."""
    for b in _backends(later.backend):
        try:
            where = later.stretch if b == later.backend else open_video(later.path, b).stretch(later.indices)
            got = _decoded(where, later.indices, transform)
            if got.indices:
                return got
        except Exception:  # noqa: S112 - a stretch that fails in one decoder is tried in the other
            continue
    return Frames(np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.float32), [], len(later.indices))
