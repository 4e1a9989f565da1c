"""Search at ViT-B/32 sizes (D = 512, 12 frames, 32 words) on synthetic embeddings, random weights, CPU.

1. Top-10 agreement of the two-stage search (coarse shortlist of C candidates, then full TC-MGC) with exhaustive
   TC-MGC scoring of every video, on 10,000 videos, for several C: the fraction of queries whose two top-10 sets
   are identical, and the mean overlap.
2. Latency per query of the two-stage search at 10,000 and 100,000 videos (the index, i.e. temporal features, is
   built beforehand, as `tcmgc search` does once per collection): for the first queries, and, at 10,000, once the
   index keeps LVA's per-entry tensors (after queries have computed a collection's worth of them); results without
   moments, and at 10,000 also with each result's 3 best moments (what moments add to a query).
3. Queries in company, as `tcmgc serve` batches them: 8 queries one call at a time against all 8 in one call, on a
   collection of 300 videos (smaller than the shortlist, as a folder of one's own videos often is, so the queries
   share their candidates and are scored in one pass).

Synthetic data with neighbourhoods, as real collections have: videos come in topics of 50 (topic vector + the
video's own offset + per-frame noise); each query is built from one video's frames (its words from single frames,
its sentence from their mean) plus noise. Agreement uses the exhaustive score matrix: the two-stage top-10 is the
top-10 of those same pair scores within the coarse shortlist.

    python benchmarks/search.py           # quick: agreement on 10,000 videos x 100 queries, latency at 10k and 100k
    python benchmarks/search.py --full    # 300 queries for agreement

The last line printed is one JSON object.
"""

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import LogitScaleOnly  # noqa: E402

from tcmgc_cli.config import ModelConfig  # noqa: E402
from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures  # noqa: E402
from tcmgc_cli.search import SearchIndex  # noqa: E402
from tcmgc_cli.search.collection import Collection  # noqa: E402
from tcmgc_cli.search.rankers import TcmgcRanker, coarse_vectors  # noqa: E402
from tcmgc_cli.search.rows import Stack  # noqa: E402
from tcmgc_cli.search.store import MatrixStore  # noqa: E402

D, T, L = 512, 12, 32


class _Trained:
    def __init__(self, model: TcmgcModel) -> None:
        self.model, self.device, self.tokenizer, self.precision = model, torch.device("cpu"), None, "fp32"
        self.visual_trained = False


def make_index(model: TcmgcModel, n: int, seed: int = 0, encode: bool = True) -> SearchIndex:
    """encode=False skips the temporal encoder (its output is only looked up at query time, so latency is the same)."""
    g = torch.Generator().manual_seed(seed)
    topics = torch.randn(max(1, n // 50), 1, D, generator=g)
    own = 0.7 * torch.randn(n, 1, D, generator=g)
    frames = topics[torch.arange(n) % len(topics)] + own + 0.8 * torch.randn(n, T, D, generator=g)  # (V, T, D)
    with torch.no_grad():
        temporal = (
            torch.cat([model.encode_video(frames[i : i + 4096]).temporal for i in range(0, n, 4096)])
            if encode
            else frames
        )
    collection, coarse = in_memory(frames, temporal)
    return SearchIndex(TcmgcRanker(_Trained(model)), collection, MatrixStore(coarse))  # type: ignore[arg-type]


def in_memory(frames: torch.Tensor, temporal: torch.Tensor) -> tuple[Collection, torch.Tensor]:
    """An index's contents held in memory: each video a track of T frames at 1 fps, scored whole (V, T, D), and the
    coarse vectors (V, D)."""
    n = len(frames)
    ids = [f"v{i}" for i in range(n)]
    first = np.zeros(n, dtype=np.int64)
    coarse = coarse_vectors(temporal, torch.ones(n, T, dtype=torch.bool), whole=True)
    collection = Collection(
        videos=ids, paths=[""] * n, durations=np.full(n, float(T)), offsets=np.arange(n) * T, counts=np.full(n, T),
        times=np.tile(np.arange(T, dtype=np.float64), n), frames=Stack([frames.reshape(-1, D).half().numpy()]),
        pad=np.zeros(D, np.float32), entry_ids=ids, entry_video=np.arange(n), entry_start=first, entry_stop=first + T,
        num_frames=T, padding="zero", temporal=Stack([temporal.half().numpy()]), temporal_rows=np.arange(n),
    )  # fmt: skip
    return collection, coarse


def frames_of(index: SearchIndex, entries: torch.Tensor) -> torch.Tensor:
    """(n, T, D) the frames of whole-video entries."""
    return index.collection.entry_inputs(entries)[0]


def make_queries(index: SearchIndex, q: int, seed: int = 1) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(len(index), (q,), generator=g)
    picks = torch.randint(T, (q, L), generator=g)
    words = frames_of(index, targets)[torch.arange(q)[:, None], picks] + 1.5 * torch.randn(
        q, L, D, generator=g
    )  # (Q, L, D)
    return TextFeatures(words, words.mean(1) + 0.5 * torch.randn(q, D, generator=g))


def agreement(index: SearchIndex, text: TextFeatures, candidates: list[int]) -> dict[str, dict[str, float]]:
    every = torch.arange(len(index))
    exhaustive = index.full_scores(text, every)  # (Q, V)
    truth = exhaustive.topk(10, dim=1).indices
    shortlist = index.shortlist(text, max(candidates))  # (Q, Cmax)
    out: dict[str, dict[str, float]] = {}
    for c in candidates:
        idx = shortlist[:, :c]
        got = idx.gather(1, exhaustive.gather(1, idx).topk(10, dim=1).indices)  # (Q, 10)
        same = [set(a.tolist()) == set(b.tolist()) for a, b in zip(got, truth, strict=True)]
        overlap = [len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(got, truth, strict=True)]
        out[str(c)] = {
            "identical": round(100 * float(np.mean(same)), 1),
            "overlap": round(100 * float(np.mean(overlap)), 1),
        }
    return out


def latency(index: SearchIndex, text: TextFeatures, candidates: int, moments: int = 3) -> float:
    """ms per query, one query per call, after one warm-up query (moments=0: the results' best entries only)."""
    index.search_features(text.select(slice(0, 1)), 10, candidates, moments=moments)  # warm-up
    start = time.perf_counter()
    for qi in range(len(text.sentence)):
        index.search_features(text.select(slice(qi, qi + 1)), 10, candidates, moments=moments)
    return 1000 * (time.perf_counter() - start) / len(text.sentence)


def keep_lva(index: SearchIndex, text: TextFeatures, candidates: int) -> bool:
    """Run queries until the index keeps LVA's tensors (a long-running server's state); False if it never will."""
    for _ in range(len(index) // candidates + 2):
        if index.lva is not None:
            return True
        index.search_features(text.select(slice(0, 1)), 10, candidates)
    return index.lva is not None


def together_vs_alone(index: SearchIndex, text: TextFeatures, rounds: int = 3) -> dict[str, float]:
    """ms per query: each query in its own call, and all of them in one call (best of `rounds`; no moments)."""
    index.search_features(text, 10, moments=0)  # warm-up
    alone = together = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for qi in range(len(text.sentence)):
            index.search_features(text.select(slice(qi, qi + 1)), 10, moments=0)
        alone = min(alone, time.perf_counter() - start)
        start = time.perf_counter()
        index.search_features(text, 10, moments=0)
        together = min(together, time.perf_counter() - start)
    n = len(text.sentence)
    return {"queries": n, "alone_ms_per_query": round(1000 * alone / n, 2),
            "together_ms_per_query": round(1000 * together / n, 2), "speedup": round(alone / together, 2)}  # fmt: skip


def _peak_mb() -> int:
    """This process's peak resident memory so far (Linux reports KB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="300 queries for the agreement measurement")
    parser.add_argument("--candidates", default="50,100,200,500,1000")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TcmgcModel(ModelConfig(embed_dim=D, max_words=L, num_frames=T), LogitScaleOnly()).eval()
    cands = [int(c) for c in args.candidates.split(",")]
    small = make_index(model, 10_000)
    agree = agreement(small, make_queries(small, 300 if args.full else 100), cands)
    for c, r in agree.items():
        print(
            f"10,000 videos, C = {c:>5}: identical top-10 on {r['identical']:5.1f}% of queries, mean overlap {r['overlap']:5.1f}%",
            flush=True,
        )
    results: dict = {"agreement_10k": agree, "latency_ms": {}, "peak_rss_mb_after": {"agreement_10k": _peak_mb()}}
    for n in (10_000, 100_000):
        # a fresh index over the same entries: the agreement's exhaustive scoring made `small` keep LVA's tensors
        if n == 10_000:
            index = small.fresh()
        else:
            index = make_index(model, n, encode=False)
        c, text = 500, make_queries(index, 10, seed=2)
        ms = latency(index, text, c, moments=0)
        results["latency_ms"][f"{n}_C{c}"] = round(ms, 1)
        print(
            f"{n:>7,} videos, C = {c}: {ms:7.1f} ms per query (the first queries; results without moments)", flush=True
        )
        if n == 10_000:  # what moments add: the same queries with each result's 3 best moments
            fresh = small.fresh()
            with_moments = latency(fresh, text, c, moments=3)
            results["latency_ms"][f"{n}_C{c}_moments"] = round(with_moments, 1)
            results["moments_ms_per_query"] = round(with_moments - ms, 1)
            print(f"{n:>7,} videos, C = {c}: {with_moments:7.1f} ms per query with moments: they add "
                  f"{with_moments - ms:.1f} ms", flush=True)  # fmt: skip
        if keep_lva(index, text, c):
            ms = latency(index, text, c, moments=0)
            results["latency_ms"][f"{n}_C{c}_kept"] = round(ms, 1)
            print(f"{n:>7,} videos, C = {c}: {ms:7.1f} ms per query (LVA's tensors kept)", flush=True)
        results["peak_rss_mb_after"][f"latency_{n}"] = _peak_mb()
        del index
    folder = make_index(model, 300)
    results["batched_300"] = together_vs_alone(folder, make_queries(folder, 8, seed=3))
    print(f"    300 videos, 8 queries: {results['batched_300']}", flush=True)
    print(f"peak memory (RSS) after each stage, MB: {results['peak_rss_mb_after']}", flush=True)
    print(json.dumps({"benchmark": "search", "threads": torch.get_num_threads(), **results}))


if __name__ == "__main__":
    main()
