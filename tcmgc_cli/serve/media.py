"""Keyframe thumbnails: the frame shown at a time, small, as JPEG, made on first request and kept on disk.

A thumbnail is named by the frame it shows (not the time asked for: every time past the end of a video shows its
last frame, one file), and the folder keeps at most `cap_bytes`, the least recently used going first.
"""

import functools
import hashlib
import io
import os
import threading
from pathlib import Path

import numpy as np

from tcmgc_cli.data.video import VideoBackend, has_decord, open_video, read_video
from tcmgc_cli.errors import VideoDecodeError
from tcmgc_cli.fileio import atomic_path

WIDTH = 240  # pixels; the height keeps the video's aspect
CAP_BYTES = 256 << 20  # thumbnails kept per folder


@functools.lru_cache(maxsize=256)
def frame_times(path: Path, stamp: tuple[int, int]) -> np.ndarray:
    """(n,) every frame's start time in a video file (`stamp`: its size and mtime, so that a changed file is read
    again). Opening costs a pass over the file's packets with PyAV: once per file, then from memory."""
    try:
        reader = open_video(path, VideoBackend.decord if has_decord() else VideoBackend.pyav)
    except VideoDecodeError:
        reader = open_video(path, VideoBackend.pyav)
    return np.asarray(reader.times, dtype=np.float64)


def frame_shown(path: Path, t: float) -> int:
    """The number of the frame on screen at `t` seconds (the last one for a time past the end)."""
    st = path.stat()
    times = frame_times(path, (st.st_size, st.st_mtime_ns))
    return int(np.clip(np.searchsorted(times, t + 1e-9, side="right") - 1, 0, len(times) - 1))


class Thumbnails:
    """JPEGs in the first writable of `folders` (beside the cache, or in the workspace when that is read-only), one
    per video and frame shown, at most `cap_bytes` of them per folder."""

    def __init__(self, folders: list[Path], cap_bytes: int = CAP_BYTES) -> None:
        self.folders, self.cap_bytes = folders, cap_bytes
        self._lock = threading.Lock()
        self._bytes: dict[Path, int] = {}  # what each folder holds, counted once, then kept up to date

    def get(self, video_id: str, path: Path, t: float) -> Path:
        frame = frame_shown(path, t)
        name = f"{hashlib.sha1(f'{video_id}|{path}'.encode()).hexdigest()[:16]}-f{frame}.jpg"
        for folder in self.folders:
            if (folder / name).is_file():
                os.utime(folder / name)  # recently used: the cap deletes it last
                return folder / name
        with self._lock:
            data = _jpeg(_frame(path, frame))
            for folder in self.folders:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    with atomic_path(folder / name) as tmp:
                        tmp.write_bytes(data)
                except OSError:
                    continue  # read-only: the next place
                if folder not in self._bytes:
                    self._bytes[folder] = sum(p.stat().st_size for p in folder.glob("*.jpg"))
                else:
                    self._bytes[folder] += len(data)
                if self._bytes[folder] > self.cap_bytes:
                    self._bytes[folder] = self._cap(folder, keep=folder / name)
                return folder / name
        raise VideoDecodeError(f"nowhere to keep thumbnails: {', '.join(map(str, self.folders))} are not writable")

    def _cap(self, folder: Path, keep: Path) -> int:
        """Delete the least recently used thumbnails (never `keep`, the one just made) until the folder holds at
        most cap_bytes; returns what it holds."""
        files = [(p.stat(), p) for p in folder.glob("*.jpg")]
        total = sum(st.st_size for st, _ in files)
        for st, p in sorted(files, key=lambda item: item[0].st_mtime_ns):
            if total <= self.cap_bytes:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= st.st_size
        return total


def _frame(path: Path, index: int) -> np.ndarray:
    """Frame `index` of a video: (H, W, 3) uint8."""
    frames, _, _ = read_video(path, lambda count, fps: [min(index, count - 1)])
    frame: np.ndarray = frames[0]
    return frame


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame)
    height = max(1, round(image.height * WIDTH / image.width))
    out = io.BytesIO()
    image.resize((WIDTH, height), Image.Resampling.BICUBIC).save(out, format="JPEG", quality=85)
    return out.getvalue()
