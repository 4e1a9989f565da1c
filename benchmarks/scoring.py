"""Scoring cost at ViT-B/32 sizes (D = 512, 12 frames, 32 words), random weights, side by side in one run:

    (a) CLIP mean-pooled cosine             one matrix product
    (b) X-CLIP-style                        the model with text conditioning, SR and LSA off (method doc reduction)
    (c) TC-MGC, straightforward             LVA's LayerNorm -> D x D linear -> LayerNorm on every pooled vector of
                                            every pair, block by block (the reference's way)
    (d) TC-MGC, ours                        the same equations through the factorized LVA
    (e) TC-MGC + hierarchy                  (d) with the hierarchical interaction model on LVA's units
                                            (model.hierarchy, method doc section 17), and (f) on the temporal frames

Each runs in its own process, so peak memory (max RSS above the process's state after setup) is its own.
(c) is slow (about 0.5 ms a pair on 2 cores): it scores a square corner of the matrix (--straightforward-size),
and (b) and (d) score the same corner too, so that every ratio compares the same work (same texts, same videos,
same blocks): speedup_vs_straightforward = time (c) / time (d) on the corner; ratio_vs_xclip = time (d) / time (b)
on the full matrix, ratio_vs_xclip_corner on the corner; hierarchy_ratio = time (e) / time (d) (and
hierarchy_agnostic_ratio for (f)). The scores of (d) and (c) are compared on the corner
(max_rel_diff = max |d - c| / max |c|). Each time is the best of 3 runs (of 1 for (c)); `seconds` includes the
per-video work (temporal encoder, LVA tensors: `encode_s`), `score_s` is the block-by-block scoring alone, and the
`*_scoring_only` ratios compare that. --profile adds each scorer's five most expensive torch operators.

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
from dataclasses import replace

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


def _worker(variant: str, q: int, v: int, chunk: int, out_path: str, threads: int, profile: bool) -> None:
    from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    words, sentence, frames = _inputs(q, v)
    cfg = ModelConfig(embed_dim=D, max_words=L, num_frames=T)
    cfg = {"xclip": cfg.xclip(), "hierarchy": replace(cfg, hierarchy=True),
           "hierarchy_agnostic": replace(cfg, hierarchy=True, hierarchy_inputs="agnostic")}.get(variant, cfg)  # fmt: skip
    model = TcmgcModel(cfg, LogitScaleOnly()).eval()
    text = TextFeatures(words, sentence)
    base = _rss_mb()

    times = {"encode": float("inf"), "score": float("inf")}

    def score() -> torch.Tensor:
        with torch.no_grad():
            if variant == "clip":
                return F.normalize(sentence, dim=-1) @ F.normalize(frames.mean(1), dim=-1).T
            factorized = variant != "direct"
            start = time.perf_counter()
            video = model.encode_video(frames, factorized=factorized)  # temporal encoder (+ LVA tensors), per video
            middle = time.perf_counter()
            out: torch.Tensor = model.score_chunked(text, video, chunk, chunk, factorized=factorized)["logits"]
            times["encode"] = min(times["encode"], middle - start)
            times["score"] = min(times["score"], time.perf_counter() - middle)
            return out

    seconds = float("inf")
    for _ in range(1 if variant == "direct" else 3):  # the best of 3 (the slow straightforward path: 1)
        start = time.perf_counter()
        scores = score()
        seconds = min(seconds, time.perf_counter() - start)
    stats = {
        "seconds": seconds,
        **({f"{k}_s": round(v, 3) for k, v in times.items()} if variant != "clip" else {}),
        "peak_mb": round(_rss_mb() - base, 1),
    }
    if profile:
        from torch.profiler import profile as torch_profile

        with torch_profile() as prof:
            score()
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops) or 1
        stats["top_ops"] = {e.key: round(e.self_cpu_time_total / total, 3) for e in ops[:5]}
    np.save(out_path, scores.numpy())
    with open(out_path + ".json", "w") as fh:
        json.dump(stats, fh)


def run(variant: str, q: int, v: int, chunk: int, threads: int, profile: bool) -> tuple[dict[str, float], np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "scores.npy")
        proc = mp.get_context("spawn").Process(target=_worker, args=(variant, q, v, chunk, path, threads, profile))
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
    parser.add_argument("--profile", action="store_true", help="also report each scorer's most expensive operators")
    args = parser.parse_args()
    n = 1000 if args.full else 256
    corner = args.straightforward_size or (256 if args.full else 128)
    results = {}
    for name, variant, size in (("a_clip", "clip", n), ("b_xclip", "xclip", n), ("d_ours", "ours", n),
                                ("c_straightforward", "direct", corner), ("d_ours_corner", "ours", corner),
                                ("b_xclip_corner", "xclip", corner), ("e_hierarchy", "hierarchy", n),
                                ("f_hierarchy_agnostic", "hierarchy_agnostic", n)):  # fmt: skip
        stats, scores = run(variant, size, size, args.chunk, args.threads, args.profile)
        results[name] = (stats, scores)
        print(f"{name:20s} {size:5d} x {size:<5d} {stats['seconds']:9.3f} s  {stats['us_per_pair']:9.3f} us/pair  "
              f"peak +{stats['peak_mb']:.0f} MB  {stats.get('top_ops', '')}", flush=True)  # fmt: skip
    c, c_scores = results["c_straightforward"]
    d_corner = results["d_ours_corner"][1]
    max_rel = float(np.max(np.abs(d_corner - c_scores)) / np.max(np.abs(c_scores)))
    d, b = results["d_ours"][0], results["b_xclip"][0]
    dc, bc = results["d_ours_corner"][0], results["b_xclip_corner"][0]
    summary = {
        "benchmark": "scoring", "texts": n, "videos": n, "corner": corner, "chunk": args.chunk, "threads": args.threads,
        **{k: v[0] for k, v in results.items()},
        "c_straightforward_extrapolated_s": round(c["us_per_pair"] * n * n / 1e6, 1),
        "ratio_vs_xclip": round(d["seconds"] / b["seconds"], 3),
        "ratio_vs_xclip_corner": round(dc["seconds"] / bc["seconds"], 3),
        "ratio_vs_xclip_scoring_only": round(d["score_s"] / b["score_s"], 3),
        "ratio_vs_xclip_corner_scoring_only": round(dc["score_s"] / bc["score_s"], 3),
        "speedup_vs_straightforward": round(c["seconds"] / dc["seconds"], 2),
        "hierarchy_ratio": round(results["e_hierarchy"][0]["seconds"] / d["seconds"], 3),
        "hierarchy_agnostic_ratio": round(results["f_hierarchy_agnostic"][0]["seconds"] / d["seconds"], 3),
        "max_rel_diff": max_rel,
    }  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
