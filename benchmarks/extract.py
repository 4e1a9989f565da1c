"""Extraction throughput: decode-only, encode-only and full `extract`, side by side on the same videos.

Two encoders: the tiny test model (decode-bound) and a ViT-B/32-sized CLIP with random weights (encode-bound).
`overlap` = full wall time / max(decode-only, encode-only): 1.0 means the slower stage hides the other entirely.

    python benchmarks/extract.py            # quick: about 2 minutes on a 2-core CPU
    python benchmarks/extract.py --full     # all 120 sample videos for both encoders
    python benchmarks/extract.py --long     # one 10-minute 1280x720 video, the towers a user picks (below)

--long: seconds of video indexed per second of wall time, for ViT-B-32, MobileCLIP2-S0 and ViT-B-16-SigLIP2 (random
weights), each in fp32, bf16, int8 and auto (`auto` decides with a fresh record, so its time includes the measuring),
beside the decode-only (the default backend's, and the other's) and encode-only ceilings and the share of the
encode-only rate that full extraction reaches (`extract_<precision>_of_encode_only`) (at 1 frame per second of video, seconds of video per second equal
frames per second), and the tower's achieved GFLOP/s against this host's measured matrix-multiply peak in the same
precision.

The last line printed is one JSON object with the figures.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tcmgc_cli.cache import CacheSettings  # noqa: E402
from tcmgc_cli.config import TrackConfig  # noqa: E402
from tcmgc_cli.data.video import VideoBackend  # noqa: E402
from tcmgc_cli.defaults import BACKEND  # noqa: E402
from tcmgc_cli.extract import ExtractOptions, extract, plan_jobs  # noqa: E402
from tcmgc_cli.extract.decode import Decoded, Decoder, decode_stream  # noqa: E402
from tcmgc_cli.model.encoder import FrameEncoder  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / "sample_data" / "msrvtt" / "videos"


def measure(
    name: str, clip: str, num_videos: int, num_frames: int, workers: int | None, batch: int
) -> dict[str, float]:
    jobs, _, _ = plan_jobs(VIDEOS)
    jobs = sorted(jobs, key=lambda j: int(j.video_id[5:]))[:num_videos]
    encoder = FrameEncoder.load(clip, None, "cpu")
    rule = TrackConfig(1.0, num_frames)
    decode = Decoder(rule.fps, encoder.preprocess, VideoBackend(BACKEND))
    workers = ExtractOptions(workers=workers).decoders(gpu=False)
    window = max(2 * workers, 2 * batch)

    t0 = time.perf_counter()
    decoded = [r for r in decode_stream([(j, None) for j in jobs], decode, workers, window) if isinstance(r, Decoded)]
    decode_s = time.perf_counter() - t0

    frames = torch.from_numpy(np.concatenate([d.frames for d in decoded]))  # (sum of n_i, S, S, 3): every track
    encoder(frames[:2])  # warm-up
    t0 = time.perf_counter()
    encode_blocks(encoder, frames)
    encode_s = time.perf_counter() - t0

    settings = CacheSettings(name, encoder.fingerprint, encoder.preprocess.size, rule.to_dict())
    with tempfile.TemporaryDirectory() as tmp:
        report = extract(jobs, Path(tmp) / "c.h5", encoder, settings, workers=workers, batch_size=batch)
    assert len(report.extracted) == len(jobs), report.failed
    wall = report.wall_s
    return {
        "videos": len(jobs),
        "frames": report.frames,
        "decode_only_s": round(decode_s, 2),
        "encode_only_s": round(encode_s, 2),
        "extract_s": round(wall, 2),
        "videos_per_s": round(len(jobs) / wall, 2),
        "overlap": round(wall / max(decode_s, encode_s), 3),
        "decoder_processes": workers,
    }


LONG_MODELS = {
    "ViT-B-32": "ViT-B-32-quickgelu",
    "MobileCLIP2-S0": "MobileCLIP2-S0",
    "ViT-B-16-SigLIP2": "ViT-B-16-SigLIP2",
}


def matmul_peak(precision: str, n: int = 2048, repeats: int = 3) -> float:
    """This host's matrix-multiply rate in GFLOP/s (n x n by n x n, best of `repeats`)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def encode_blocks(encoder: FrameEncoder, frames: torch.Tensor, block: int = 32) -> None:
    """Every frame through the tower in blocks of 32, as extraction does on a CPU: (N, S, S, 3) -> (N, D)."""
    for start in range(0, len(frames), block):
        encoder(frames[start : start + block])


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tower_flops(encoder: Any) -> float:
    """FLOPs of the image tower on one frame (counted by torch's flop counter, fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, encoder.preprocess.size, encoder.preprocess.size)
    for p in encoder.visual.parameters():  # the counter's module hooks trip over leaves that ask for gradients
        p.requires_grad_(False)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder.visual(x)
    return float(counter.get_total_flops())


def measure_long(video: Path, work: Path, name: str, clip: str, workers: int | None = None) -> dict[str, Any]:
    """One tower on the long video: ceilings, then full extraction in each precision."""
    from tcmgc_cli.extract import extract_folder

    seconds_of_video = 0.0
    out: dict[str, Any] = {}
    fp32 = FrameEncoder.load(clip, None, "cpu", "fp32")
    flops = tower_flops(fp32)
    for backend in (VideoBackend(BACKEND), *(b for b in VideoBackend if b != VideoBackend(BACKEND))):
        decode = Decoder(1.0, fp32.preprocess, backend)
        t0 = time.perf_counter()
        stretches = [d for d in decode_stream([(plan_jobs(video.parent)[0][0], None)], decode, 0, 1)
                     if isinstance(d, Decoded)]  # fmt: skip
        seconds_of_video = stretches[0].info.duration
        key = (
            "decode_only_video_s_per_s" if backend == VideoBackend(BACKEND) else f"decode_only_{backend}_video_s_per_s"
        )
        out[key] = round(seconds_of_video / (time.perf_counter() - t0), 1)
    frames = torch.from_numpy(np.concatenate([d.frames for d in stretches])[:64])  # (64, S, S, 3): 2 CPU blocks
    for precision in ("fp32", "bf16", "int8"):
        enc = fp32.with_precision(precision)
        enc(frames[:8])  # warm-up
        rate = len(frames) / min(_timed(lambda e=enc: encode_blocks(e, frames)) for _ in range(2))
        out[f"encode_only_{precision}_video_s_per_s"] = round(rate, 1)
        out[f"{precision}_gflops"] = round(rate * flops / 1e9, 1)
        if precision != "int8":  # (no int8 matrix-multiply peak is measured)
            out[f"{precision}_of_peak"] = round(rate * flops / 1e9 / matmul_peak(precision), 3)
    for precision in ("fp32", "bf16", "int8", "auto"):
        os.environ["XDG_CACHE_HOME"] = str(work / f"xdg-{name}-{precision}")  # auto measures afresh
        start = time.perf_counter()
        report = extract_folder(video.parent, clip, cache=work / f"{name}-{precision}.h5", pretrained="none",
                                precision=precision, workers=workers)  # fmt: skip
        wall = time.perf_counter() - start
        assert report.extracted, report.failed
        out[f"extract_{precision}_video_s_per_s"] = round(report.video_seconds / wall, 1)
        if precision != "auto":  # the share of the tower's own rate that extraction reaches: the whole call (with
            # the tower's loading), and the pipeline alone (first decode to last write: what 1,000 hours cost)
            ceiling = out[f"encode_only_{precision}_video_s_per_s"]
            out[f"extract_{precision}_of_encode_only"] = round(report.video_seconds / wall / ceiling, 3)
            out[f"pipeline_{precision}_of_encode_only"] = round(report.video_seconds / report.wall_s / ceiling, 3)
        if precision == "auto":
            from tcmgc_cli.cache import FeatureCache

            out["auto_chose"] = FeatureCache(work / f"{name}-{precision}.h5").settings.precision
    out["gflop_per_frame"] = round(flops / 1e9, 2)
    out.update(int8_fidelity(clip, work / f"{name}-fp32.h5", work / f"{name}-int8.h5"))
    return out


def int8_fidelity(clip: str, fp32_cache: Path, int8_cache: Path, k: int = 10) -> dict[str, float]:
    """What int8 changes where it matters, on the long video's frames as both extractions cached them: each frame's
    cosine to its fp32 feature, and the top-10 agreement of searches over the same collection (the sample captions
    through the same random-weight CLIP's text tower, each query's 10 best frames by cosine under fp32 and under
    int8 features, |both| / 10 averaged over the queries)."""
    import pandas as pd

    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.model.encoder import TextEncoder

    caches = [FeatureCache(p) for p in (fp32_cache, int8_cache)]
    video = caches[0].videos()[0]
    a, b = (torch.from_numpy(c.track(video)[1]) for c in caches)  # (n, D) each
    captions = pd.read_csv(VIDEOS.parents[1] / "captions.csv")["caption"].tolist()[:100]
    _, queries = TextEncoder.load(clip, None, "cpu")(captions)  # (Q, D)
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    top = [(q @ torch.nn.functional.normalize(f, dim=-1).T).topk(k, dim=-1).indices for f in (a, b)]  # (Q, k) each
    agree = [len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(*top, strict=True)]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return {"int8_min_cosine": round(float(cos.min()), 5), "int8_mean_cosine": round(float(cos.mean()), 5),
            "int8_top10_agreement": round(float(np.mean(agree)), 3), "int8_queries": len(agree), "frames": len(a)}  # fmt: skip


def long_main(
    minutes: int, video: Path | None = None, models: list[str] | None = None, workers: int | None = None
) -> None:
    from long_video import make_video

    os.environ.pop("TCMGC_PRECISION", None)
    results: dict[str, Any] = {"benchmark": "extract_long", "cpu_threads": torch.get_num_threads(), "workers": workers}
    results["video"] = str(video) if video is not None else f"{minutes} minutes of 1280x720, made here"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if video is None:
            (work / "video").mkdir()
            video = make_video(work / "video" / "long.mp4", minutes * 60, 1280, 720)
        for name in models or list(LONG_MODELS):
            results[name] = measure_long(video, work, name, LONG_MODELS[name], workers)
            print(json.dumps({name: results[name]}), flush=True)
    print(json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="all 120 sample videos for both encoders")
    parser.add_argument("--workers", type=int, default=None, help="decoder processes (default: as extract, 0 on a CPU)")
    parser.add_argument("--long", action="store_true", help="one 10-minute 1280x720 video, three towers, precisions")
    parser.add_argument("--minutes", type=int, default=10, help="with --long: the video's length")
    parser.add_argument("--video", type=Path, default=None, help="with --long: use this video (alone in its folder)")
    parser.add_argument("--models", default=",".join(LONG_MODELS), help="with --long: which of the towers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, as `tcmgc extract --threads`")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.long:
        long_main(args.minutes, args.video, args.models.split(","), args.workers)
        return
    sizes = {"tiny": 120, "vit_b32": 120} if args.full else {"tiny": 120, "vit_b32": 24}
    results = {
        "tiny": measure("tcmgc-tiny", "tcmgc-clip-tiny", sizes["tiny"], 8, args.workers, 16),
        "vit_b32": measure("vit-b32-random", "ViT-B-32-quickgelu", sizes["vit_b32"], 12, args.workers, 8),
    }
    for name, r in results.items():
        print(f"{name:8s} decode {r['decode_only_s']:6.2f}s  encode {r['encode_only_s']:6.2f}s  "
              f"extract {r['extract_s']:6.2f}s  {r['videos_per_s']:6.2f} videos/s  overlap {r['overlap']:.2f}")  # fmt: skip
    print(json.dumps({"benchmark": "extract", "cpu_threads": torch.get_num_threads(), **results}))


if __name__ == "__main__":
    main()
