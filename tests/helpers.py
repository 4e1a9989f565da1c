"""Helpers shared by tests: where the sample data is, exact synthetic videos, a small dataset, a quick training
recipe, and the check that a command failed with one line."""

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MSRVTT = ROOT / "sample_data" / "msrvtt"
QUICK = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "train.log_every=1"]  # one quick epoch


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


def webm(path: Path, colour: tuple[int, int, int], seconds: int = 6, fps: int = 4) -> Path:
    """A square of one colour moving right (VP9: every Chromium plays it)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.bit_rate, stream.options = 200_000, {"threads": "1", "deadline": "realtime", "cpu-used": "8"}
        for n in range(seconds * fps):
            frame = np.full((64, 64, 3), 20, dtype=np.uint8)
            x = (n * 2) % 48
            frame[24:40, x : x + 16] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def small_dataset(folder: Path) -> Path:
    """A csv dataset over 16 sample videos: 12 train, 4 test."""
    rows = ["video_id,caption,split"]
    for line in (SAMPLE_MSRVTT.parent / "captions.csv").read_text().splitlines()[1:]:
        vid, caption, _, _ = line.rsplit(",", 3) if line.count('"') == 0 else (None, None, None, None)
        if vid is None or int(vid[5:]) >= 16:
            continue
        rows.append(f"{vid},{caption},{'train' if int(vid[5:]) < 12 else 'test'}")
    path = folder / "small.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def one_line_error(result: object, code: int = 1) -> str:
    """The output of a command that failed as the CLI promises: exit `code`, an `Error:` line, no traceback."""
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == code, out  # type: ignore[attr-defined]
    assert "Traceback" not in out and "Error:" in out
    return str(out)
