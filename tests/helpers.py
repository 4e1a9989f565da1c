"""Helpers shared by tests: exact synthetic videos."""

from pathlib import Path

import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 4) -> Path:
    """Lossless H.264 RGB video: decodes back bit-exact (PyAV libx264rgb, crf 0)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"crf": "0", "threads": "1"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        container.mux(stream.encode())
    return path


def random_frames(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def copy_cache(source: Path, target: Path) -> Path:
    """A cache is its root file and its folder of segments: copy both (not its saved search indexes or locks)."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    shutil.copytree(source.with_name(source.name + ".d"), target.with_name(target.name + ".d"),
                    ignore=shutil.ignore_patterns("search-*", "lock*", "index-*"))  # fmt: skip
    return target
