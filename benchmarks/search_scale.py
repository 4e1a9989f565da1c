"""The coarse stage of `tcmgc search` at 100,000 and 1,000,000 videos (512 dims, float16 storage), CPU.

Per query: the coarse shortlist (`tcmgc_cli.search.coarse_topk` over the float16 index, multiplied in float16 blocks), then full
TC-MGC scoring of the C candidates (ViT-B/32 sizes: D = 512, 12 frames, 32 words, random weights). Top-10
agreement: the fraction of queries whose two-stage top-10 set equals the exhaustive TC-MGC top-10 over the whole
collection, which is computed block by block so that 1M videos never sit in memory at once.

Synthetic videos are generated block by block from their index (topics of 50 videos, as in benchmarks/search.py),
so a candidate's features are re-created on demand instead of read from a store; the temporal encoder has 0 layers
here (it runs once per video when an index is built, never per query).

    python benchmarks/search_scale.py          # quick: 100,000 videos, 10 queries
    python benchmarks/search_scale.py --full   # 100,000 and 1,000,000 videos (1M agreement on 5 queries)

The last line printed is one JSON object.
"""

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import LogitScaleOnly  # noqa: E402

from tcmgc_cli.config import ModelConfig  # noqa: E402
from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures  # noqa: E402
from tcmgc_cli.search import coarse_topk  # noqa: E402

D, T, L, BLOCK, TOPIC = 512, 12, 32, 50_000, 50


def topics(n: int) -> torch.Tensor:
    return torch.randn(n // TOPIC + 1, D, generator=torch.Generator().manual_seed(99))


def frames_of(idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Frame features (len(idx), T, D) of the given videos, the same every time they are asked for."""
    out = torch.empty(len(idx), T, D)
    for row, v in enumerate(idx.tolist()):
        g = torch.Generator().manual_seed(1_000_003 * v + 7)
        own = 0.7 * torch.randn(1, D, generator=g)
        out[row] = table[v // TOPIC] + own + 0.8 * torch.randn(T, D, generator=g)
    return out


def build_coarse(model: TcmgcModel, n: int, table: torch.Tensor) -> torch.Tensor:
    parts = []
    for start in range(0, n, BLOCK):
        idx = torch.arange(start, min(n, start + BLOCK))
        with torch.no_grad():
            temporal = model.encode_video(frames_of(idx, table)).temporal
        parts.append(F.normalize(temporal.mean(1), dim=-1).half())
    return torch.cat(parts)


def queries(n: int, q: int, table: torch.Tensor, seed: int = 1) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(n, (q,), generator=g)
    frames = frames_of(targets, table)
    words = frames[torch.arange(q)[:, None], torch.randint(T, (q, L), generator=g)] + 1.5 * torch.randn(
        q, L, D, generator=g
    )
    return TextFeatures(words, words.mean(1) + 0.5 * torch.randn(q, D, generator=g))


def full_scores(model: TcmgcModel, text: TextFeatures, idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        video = model.encode_video(frames_of(idx, table), factorized=True)
        return model.score_chunked(text, video, 64, 256)["logits"]


def two_stage(
    model: TcmgcModel, coarse: torch.Tensor, text: TextFeatures, c: int, table: torch.Tensor
) -> list[set[int]]:
    shortlist = coarse_topk(coarse, F.normalize(text.sentence, dim=-1), c)
    out = []
    for q in range(len(shortlist)):
        scores = full_scores(model, text.select(slice(q, q + 1)), shortlist[q], table)[0]
        out.append(set(shortlist[q][scores.topk(10).indices].tolist()))
    return out


def exhaustive(model: TcmgcModel, n: int, text: TextFeatures, table: torch.Tensor) -> list[set[int]]:
    best_val = torch.full((len(text.sentence), 10), -float("inf"))
    best_idx = torch.zeros((len(text.sentence), 10), dtype=torch.long)
    for start in range(0, n, 5000):
        idx = torch.arange(start, min(n, start + 5000))
        scores = full_scores(model, text, idx, table)  # (Q, B)
        val, pos = torch.cat([best_val, scores], 1).topk(10, dim=1)
        best_idx = torch.cat([best_idx, idx.expand(len(scores), -1)], 1).gather(1, pos)
        best_val = val
    return [set(row.tolist()) for row in best_idx]


def measure(model: TcmgcModel, n: int, nq: int, c: int) -> dict[str, float]:
    table = topics(n)
    t0 = time.perf_counter()
    coarse = build_coarse(model, n, table)
    build_s = time.perf_counter() - t0
    text = queries(n, nq, table)
    shortlist_ms = []
    for q in range(nq):  # the coarse stage alone, per query
        t0 = time.perf_counter()
        coarse_topk(coarse, F.normalize(text.sentence[q : q + 1], dim=-1), c)
        shortlist_ms.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    got = two_stage(model, coarse, text, c, table)
    per_query_ms = 1000 * (time.perf_counter() - t0) / nq
    truth = exhaustive(model, n, text, table)
    return {
        "videos": n,
        "candidates": c,
        "coarse_index_mb": round(coarse.numel() * coarse.element_size() / 2**20, 1),
        "coarse_ms_per_query": round(float(np.median(shortlist_ms)), 1),
        "two_stage_ms_per_query": round(per_query_ms, 1),
        "top10_identical_pct": round(100 * float(np.mean([a == b for a, b in zip(got, truth, strict=True)])), 1),
        "queries": nq,
        "index_build_s": round(build_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also 1,000,000 videos")
    parser.add_argument("--candidates", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TcmgcModel(ModelConfig(embed_dim=D, max_words=L, num_frames=T, temporal_layers=0), LogitScaleOnly()).eval()
    results = {}
    for n, nq in ((100_000, 10), *(((1_000_000, 5),) if args.full else ())):
        r = measure(model, n, nq, args.candidates)
        results[str(n)] = r
        print(f"{n:>9,} videos: index {r['coarse_index_mb']:7.1f} MB (float16), coarse {r['coarse_ms_per_query']:6.1f} ms, "
              f"two-stage {r['two_stage_ms_per_query']:6.1f} ms per query, top-10 identical on {r['top10_identical_pct']:.0f}%", flush=True)  # fmt: skip
    print(json.dumps({"benchmark": "search_scale", "threads": torch.get_num_threads(), **results}))


if __name__ == "__main__":
    main()
