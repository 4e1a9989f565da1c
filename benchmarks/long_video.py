"""Extracting long videos as frame tracks: peak memory against a short video of the same kind, and throughput.

Two synthetic videos of the same size and frame rate (moving shapes on a gradient, H.264), one long and one of 20
seconds, are extracted as `tcmgc extract --videos` does (a track at 1 frame per second, each frame encoded once,
scored as windows; tcmgc-tiny, decoding in the extracting process) with each backend, each run in a fresh process
that reports its own peak RSS. Memory must not grow with the length of the video: goal peak_rss_ratio (long /
short) within 1.5. Beside the frames encoded per second of video, the figure of the earlier layout (15-second clips
every 7.5 seconds, each sampling ViT-B/32's 12 frames on its own), computed from that layout for the same video.

    python benchmarks/long_video.py           # quick: 3 minutes of 640x360 against 20 s
    python benchmarks/long_video.py --full    # 10 minutes of 1280x720 against 20 s

The last line printed is one JSON object.
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

FPS = 25


def make_video(path: Path, seconds: int, width: int, height: int) -> Path:
    """A moving bright square over a slowly changing gradient: cheap to encode, not trivially compressible."""
    import av

    yy, xx = (a.astype(np.uint8) for a in np.mgrid[0:height, 0:width])  # uint8: adding n wraps around for free
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "30", "g": str(2 * FPS)}
        for n in range(seconds * FPS):
            frame = np.empty((height, width, 3), dtype=np.uint8)
            frame[..., 0] = xx + np.uint8(n % 256)
            frame[..., 1] = yy + np.uint8(2 * n % 256)
            frame[..., 2] = (n // FPS * 10) % 256
            x, y = (n * 7) % (width - 64), (n * 3) % (height - 64)
            frame[y : y + 64, x : x + 64] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _extract(folder: str, backend: str, out: str) -> None:
    from tcmgc_cli.extract import extract_folder

    start = time.perf_counter()
    report = extract_folder(Path(folder), "tcmgc-tiny", cache=Path(out).with_suffix(".h5"), workers=0, backend=backend)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "entries": report.entries,
                                     "frames": report.frames, "video_seconds": report.video_seconds,
                                     "failed": len(report.failed)}))  # fmt: skip


def earlier_frames_per_second(duration: float, window: float = 15.0, stride: float = 7.5, frames: int = 12) -> float:
    """Frames the earlier layout encoded per second of video: clips of `window` s every `stride` s (the last one
    ending at the end; a last step within 2% of a stride added none), each sampling `frames` frames on its own."""
    clips = 1 if duration <= window else max(1, math.ceil((duration - window) / stride - 0.02)) + 1
    return clips * frames / duration


def measure(folder: Path, backend: str, work: Path) -> dict[str, float]:
    out = work / f"{folder.name}-{backend}.json"
    proc = mp.get_context("spawn").Process(target=_extract, args=(str(folder), backend, str(out)))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"extracting {folder.name} with {backend} failed (exit code {proc.exitcode})")
    stats: dict[str, float] = json.loads(out.read_text())
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="10 minutes of 1280x720 instead of 3 minutes of 640x360")
    args = parser.parse_args()
    minutes, (width, height) = (10, (1280, 720)) if args.full else (3, (640, 360))
    summary: dict[str, object] = {"benchmark": "long_video", "long_s": minutes * 60, "short_s": 20,
                                  "size": f"{width}x{height}", "fps": FPS}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, seconds in (("long", minutes * 60), ("short", 20)):
            (work / name).mkdir()
            start = time.perf_counter()
            make_video(work / name / f"{name}.mp4", seconds, width, height)
            print(f"made the {seconds} s video in {time.perf_counter() - start:.0f} s", flush=True)
        for backend in ("decord", "pyav"):
            long, short = measure(work / "long", backend, work), measure(work / "short", backend, work)
            summary[backend] = {
                "long_peak_rss_mb": round(long["peak_rss_mb"]), "short_peak_rss_mb": round(short["peak_rss_mb"]),
                "peak_rss_ratio": round(long["peak_rss_mb"] / short["peak_rss_mb"], 3),
                "long_seconds": round(long["seconds"], 1), "long_entries": long["entries"],
                "frames_encoded_per_video_second": round(long["frames"] / long["video_seconds"], 3),
                "earlier_frames_per_video_second": round(earlier_frames_per_second(long["video_seconds"]), 3),
                "frames_decoded_per_s": round(minutes * 60 * FPS / long["seconds"]),
                "video_seconds_per_s": round(minutes * 60 / long["seconds"], 1),
            }  # fmt: skip
            print(json.dumps({backend: summary[backend]}), flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
