"""Extraction throughput: decode-only, encode-only and full `extract`, side by side on the same videos.

Two encoders: the tiny test model (decode-bound) and a ViT-B/32-sized CLIP with random weights (encode-bound).
`overlap` = full wall time / max(decode-only, encode-only): 1.0 means the slower stage hides the other entirely.

    python benchmarks/extract.py            # quick: about 2 minutes on a 2-core CPU
    python benchmarks/extract.py --full     # all 120 sample videos for both encoders

The last line printed is one JSON object with the figures.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tcmgc_cli.cache import CacheSettings  # noqa: E402
from tcmgc_cli.config import TrackConfig  # noqa: E402
from tcmgc_cli.data.video import VideoBackend  # noqa: E402
from tcmgc_cli.extract import Decoded, _decode_stream, _Decoder, extract, plan_jobs  # noqa: E402
from tcmgc_cli.model.encoder import FrameEncoder  # noqa: E402

VIDEOS = Path(__file__).resolve().parents[1] / "sample_data" / "msrvtt" / "videos"


def measure(name: str, clip: str, num_videos: int, num_frames: int, workers: int, batch: int) -> dict[str, float]:
    jobs, _, _ = plan_jobs(VIDEOS)
    jobs = sorted(jobs, key=lambda j: int(j.video_id[5:]))[:num_videos]
    encoder = FrameEncoder.load(clip, None, "cpu")
    rule = TrackConfig(1.0, num_frames)
    decode = _Decoder(rule.fps, encoder.preprocess, VideoBackend.decord)
    window = max(2 * workers, 2 * batch)

    t0 = time.perf_counter()
    decoded = [r for r in _decode_stream([(j, None) for j in jobs], decode, workers, window) if isinstance(r, Decoded)]
    decode_s = time.perf_counter() - t0

    frames = torch.from_numpy(np.concatenate([d.frames for d in decoded]))  # (sum of n_i, S, S, 3): every track
    encoder(frames[:2])  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(frames), 256):
        encoder(frames[start : start + 256])  # (B, S, S, 3) -> (B, D)
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="all 120 sample videos for both encoders")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
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
