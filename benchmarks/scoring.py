"""Scoring cost at ViT-B/32 sizes (D = 512, 12 frames, 32 words), random weights, side by side in one run:

    (a) CLIP mean-pooled cosine             one matrix product
    (b) X-CLIP-style                        the model with text conditioning, SR and LSA off (method doc reduction)
    (c) TC-MGC, straightforward             LVA's LayerNorm -> D x D linear -> LayerNorm on every pooled vector of
                                            every pair, block by block (the reference's way)
    (d) TC-MGC, ours                        the same equations through the factorized LVA

Each runs in its own process, so peak memory (max RSS above the process's state after setup) is its own.
(c) is slow (about 0.5 ms a pair on 2 cores): it scores a square corner of the matrix (--straightforward-size),
its full-matrix time is extrapolated per pair, and speedup_vs_straightforward compares time per pair; the scores of
(d) and (c) are compared on that corner (max_rel_diff = max |d - c| / max |c|).

    python benchmarks/scoring.py           # quick: 256 texts x 256 videos, (c) on 128 x 128
    python benchmarks/scoring.py --full    # 1,000 x 1,000, (c) on 256 x 256

The last line printed is one JSON object.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import LogitScaleOnly  # noqa: E402

from tcmgc_cli.config import ModelConfig  # noqa: E402

D, T, L = 512, 12, 32


def _inputs(q: int, v: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    words = torch.randn(q, L, D, generator=g)
    return words, words[:, 5] + 0.1 * torch.randn(q, D, generator=g), torch.randn(v, T, D, generator=g)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(variant: str, q: int, v: int, chunk: int, out_path: str, threads: int) -> None:
    from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    words, sentence, frames = _inputs(q, v)
    cfg = ModelConfig(embed_dim=D, max_words=L, num_frames=T)
    model = TcmgcModel(cfg.xclip() if variant == "xclip" else cfg, LogitScaleOnly()).eval()
    text = TextFeatures(words, sentence)
    base = _rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        if variant == "clip":
            scores = F.normalize(sentence, dim=-1) @ F.normalize(frames.mean(1), dim=-1).T
        else:
            factorized = variant in ("ours", "xclip")
            video = model.encode_video(frames, factorized=factorized)
            scores = model.score_chunked(text, video, chunk, chunk, factorized=factorized)["logits"]
    seconds = time.perf_counter() - start
    np.save(out_path, scores.numpy())
    with open(out_path + ".json", "w") as fh:
        json.dump({"seconds": seconds, "peak_mb": round(_rss_mb() - base, 1)}, fh)


def run(variant: str, q: int, v: int, chunk: int, threads: int) -> tuple[dict[str, float], np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scores.npy")
        proc = mp.get_context("spawn").Process(target=_worker, args=(variant, q, v, chunk, path, threads))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"{variant} failed with exit code {proc.exitcode}")
        with open(path + ".json") as fh:
            stats = json.load(fh)
        scores = np.load(path)
    stats["us_per_pair"] = round(1e6 * stats["seconds"] / (q * v), 3)
    stats["seconds"] = round(stats["seconds"], 3)
    return stats, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="1,000 texts x 1,000 videos")
    parser.add_argument("--straightforward-size", type=int, default=None, help="side of the corner (c) scores")
    parser.add_argument("--chunk", type=int, default=64, help="texts and videos per block (the reference uses 64)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    n = 1000 if args.full else 256
    corner = args.straightforward_size or (256 if args.full else 128)
    results = {}
    for name, variant, size in (("a_clip", "clip", n), ("b_xclip", "xclip", n), ("d_ours", "ours", n),
                                ("c_straightforward", "direct", corner), ("d_ours_corner", "ours", corner)):  # fmt: skip
        stats, scores = run(variant, size, size, args.chunk, args.threads)
        results[name] = (stats, scores)
        print(f"{name:18s} {size:5d} x {size:<5d} {stats['seconds']:9.3f} s  {stats['us_per_pair']:9.3f} us/pair  "
              f"peak +{stats['peak_mb']:.0f} MB", flush=True)  # fmt: skip
    c, c_scores = results["c_straightforward"]
    d_corner = results["d_ours_corner"][1]
    max_rel = float(np.max(np.abs(d_corner - c_scores)) / np.max(np.abs(c_scores)))
    d, b = results["d_ours"][0], results["b_xclip"][0]
    summary = {
        "benchmark": "scoring", "texts": n, "videos": n, "chunk": args.chunk, "threads": args.threads,
        **{k: v[0] for k, v in results.items()},
        "c_straightforward_extrapolated_s": round(c["us_per_pair"] * n * n / 1e6, 1),
        "ratio_vs_xclip": round(d["seconds"] / b["seconds"], 3),
        "speedup_vs_straightforward": round(c["us_per_pair"] / d["us_per_pair"], 2),
        "max_rel_diff": max_rel,
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
