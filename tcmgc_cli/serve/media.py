"""Keyframe thumbnails: the frame shown at a time, small, as JPEG, made on first request and kept on disk."""

import hashlib
import io
import threading
from pathlib import Path

import numpy as np

from tcmgc_cli.data.video import read_video
from tcmgc_cli.errors import VideoDecodeError
from tcmgc_cli.fileio import atomic_path

WIDTH = 240  # pixels; the height keeps the video's aspect


class Thumbnails:
    """JPEGs in `folder` (beside the cache, or in the workspace when that is read-only), one per video and tenth of
    a second asked for."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._lock = threading.Lock()

    def get(self, video_id: str, path: Path, t: float) -> Path:
        name = f"{hashlib.sha1(f'{video_id}|{path}'.encode()).hexdigest()[:16]}-{round(t * 10)}.jpg"
        for folder in self.folders:
            if (folder / name).is_file():
                return folder / name
        with self._lock:
            data = _jpeg(_frame_at(path, t))
            for folder in self.folders:
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    with atomic_path(folder / name) as tmp:
                        tmp.write_bytes(data)
                    return folder / name
                except OSError:
                    continue  # read-only: the next place
        raise VideoDecodeError(f"nowhere to keep thumbnails: {', '.join(map(str, self.folders))} are not writable")


def _frame_at(path: Path, t: float) -> np.ndarray:
    """The frame shown at `t` seconds (the last one for a time past the end): (H, W, 3) uint8."""

    def choose(count: int, fps: float) -> list[int]:
        return [min(count - 1, max(0, int(t * fps))) if fps > 0 else 0]

    frames, _, _ = read_video(path, choose)
    frame: np.ndarray = frames[0]
    return frame


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(frame)
    height = max(1, round(image.height * WIDTH / image.width))
    out = io.BytesIO()
    image.resize((WIDTH, height), Image.Resampling.BICUBIC).save(out, format="JPEG", quality=85)
    return out.getvalue()
