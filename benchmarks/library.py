"""A library that grows, at ViT-B/32 sizes: memory and speed of search at N clips, and what adding videos costs.

The cache is made as a user's would be (`tcmgc extract` of 2 sample videos with a ViT-B/32 tower, random weights),
then grown to N clips with synthetic frame tracks through `add_tracks` (60-second tracks at 1 fps: 9 windows of
12 frames each; D = 512); a TC-MGC checkpoint with random weights searches it. Each step runs in a fresh process
that reports its own wall time and peak RSS:

1. first search: builds the index (the temporal encoder over every clip, once);
2. a fresh search process: seconds from start to the first results (loading the model and the index), then the
   mean of 10 warm queries (500 candidates, 10 results with 3 moments each), its peak RSS, and float16 against
   float32: the index keeps frames and temporal features in float16; the same candidates scored from the cache's
   float32 features differ by `fp16_max_abs_diff` (and rank the same top 10 or not);
3. adding 10 videos (`tcmgc extract` of 10 new files) and the next search (a fresh process, which indexes only
   them): the wall time of both.

Goals (issue 18): at 1,000,000 clips, peak RSS of a search process under 4 GB, a warm query under 300 ms, the
first query of a fresh process under 10 s, and adding 10 videos within 2x of adding them at 20,000 clips.

    python benchmarks/library.py           # quick: 20,000 clips
    python benchmarks/library.py --full    # 20,000 and 1,000,000 clips side by side (about 50 GB of disk)

The last line printed is one JSON object.
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "msrvtt" / "videos"
MODEL = "tcmgc-b32"
TRACK_FRAMES = 60  # frames of each synthetic track: 9 windows of 12 every 6
QUERIES = ["a red circle moves left", "a dog runs on the beach", "two people talk in a kitchen", "a car turns"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_process(target: Any, *args: Any) -> dict[str, Any]:
    """Run target(*args, out) in a fresh process; returns what it wrote to `out` (JSON)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    proc = mp.get_context("spawn").Process(target=target, args=(*args, out))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed (exit code {proc.exitcode})")
    result: dict[str, Any] = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


def _build(work: str, clips: int, out: str) -> None:
    """The cache of `clips` entries and a checkpoint with random weights."""
    import torch

    from tcmgc_cli.cache import FeatureCache, add_tracks
    from tcmgc_cli.checkpoint import save_checkpoint
    from tcmgc_cli.extract import extract_folder
    from tcmgc_cli.model.factory import create_model, resolve_spec

    root = Path(work)
    videos = root / "first"
    videos.mkdir()
    for name in ("video0.mp4", "video1.mp4"):
        shutil.copy(SAMPLE / name, videos / name)
    cache = root / "cache.h5"
    report = extract_folder(videos, MODEL, cache=cache, pretrained="none", workers=0)
    start = time.perf_counter()
    fingerprint = FeatureCache(cache).settings.encoder_fingerprint
    videos_needed = (clips - report.entries + 8) // 9
    rng = np.random.default_rng(0)
    times = np.arange(TRACK_FRAMES, dtype=np.float64)

    def tracks() -> Any:
        for n in range(videos_needed):
            base = rng.standard_normal(512).astype(np.float32)
            feats = base + 0.5 * rng.standard_normal((TRACK_FRAMES, 512)).astype(np.float32)  # (60, 512)
            yield f"synthetic{n:07d}", times, feats, f"/nowhere/synthetic{n:07d}.mp4"

    add_tracks(cache, tracks())
    torch.manual_seed(0)
    spec = resolve_spec(MODEL, "none")
    save_checkpoint(root / "checkpoint.pt", create_model(spec), spec,
                    {"data": {"encoder_fingerprint": fingerprint, "visual_trained": False}})  # fmt: skip
    entries = len(FeatureCache(cache))
    Path(out).write_text(json.dumps({"clips": entries, "add_tracks_s": time.perf_counter() - start,
                                     "cache_gb": _size_gb(cache)}))  # fmt: skip


def _size_gb(cache: Path, pattern: str = "seg-*.h5") -> float:
    folder = cache.with_name(cache.name + ".d")
    return round(sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file()) / 2**30, 2)


def _search(work: str, queries: int, out: str) -> None:
    """A fresh search process: time to the first results, warm queries, peak RSS, float16 against float32."""
    start = time.perf_counter()
    import torch

    from tcmgc_cli.search import open_search

    root = Path(work)
    index = open_search(root / "checkpoint.pt", root / "cache.h5", device="cpu", precision="fp32")
    index.search([QUERIES[0]], top_k=10)
    first = time.perf_counter() - start
    warm = []
    for n in range(queries):
        t0 = time.perf_counter()
        index.search([QUERIES[n % len(QUERIES)] + f" {n}"], top_k=10)
        warm.append(time.perf_counter() - t0)
    stats = {"first_query_s": round(first, 2), "warm_query_ms": round(1000 * float(np.mean(warm)), 1) if warm else 0,
             "peak_rss_mb": round(_peak_mb()), "clips": len(index)}  # fmt: skip
    if queries:
        stats.update(_fp16_against_fp32(index, root / "cache.h5"))
        del torch
    Path(out).write_text(json.dumps(stats))


def _fp16_against_fp32(index: Any, cache_path: Path) -> dict[str, Any]:
    """One query's candidates scored from the index (float16 frames and temporal features) and from the cache's
    float32 features (temporal encoder run again): the largest score difference, and whether the top 10 agree."""
    import torch

    from tcmgc_cli.cache import FeatureCache

    text, _ = index.encode_queries([QUERIES[1]])
    shortlist = index.shortlist(text, 500)[0]
    stored = index.full_scores(text, shortlist)[0]
    ids = [index.ids[i] for i in shortlist.tolist()]
    frames, masks = FeatureCache(cache_path).entry_inputs(ids)
    x, m = torch.from_numpy(frames), torch.from_numpy(masks)
    with torch.no_grad():
        exact = index.ranker.scores(text, x, index.ranker.temporal(x, m), m)[0]
    top = lambda s: s.topk(10).indices.tolist()  # noqa: E731
    return {"fp16_max_abs_diff": float((stored - exact).abs().max()), "fp16_score_range": float(exact.max() - exact.min()),
            "fp16_same_top10": top(stored) == top(exact)}  # fmt: skip


def _add(work: str, out: str) -> None:
    from tcmgc_cli.extract import extract_folder

    start = time.perf_counter()
    root = Path(work)
    folder = root / "more"
    folder.mkdir(exist_ok=True)
    for n in range(10):
        shutil.copy(SAMPLE / f"video{n + 2}.mp4", folder / f"added{n}.mp4")
    report = extract_folder(folder, MODEL, cache=root / "cache.h5", pretrained="none", workers=0)
    assert len(report.extracted) == 10, report.failed
    Path(out).write_text(json.dumps({"extract_s": round(time.perf_counter() - start, 2)}))


def measure(clips: int, work: Path) -> dict[str, Any]:
    built = _in_process(_build, str(work), clips)
    print(f"{clips:,} clips: cache built ({built['cache_gb']} GB, {built['add_tracks_s']:.0f} s)", flush=True)
    first = _in_process(_search, str(work), 0)
    first["index_gb"] = _size_gb(work / "cache.h5", "index-*/part-*/*")
    print(f"{clips:,} clips: first search (builds the index) {first['first_query_s']} s, "
          f"{first['index_gb']} GB", flush=True)  # fmt: skip
    fresh = _in_process(_search, str(work), 10)
    print(f"{clips:,} clips: fresh process {fresh}", flush=True)
    added = _in_process(_add, str(work))
    after = _in_process(_search, str(work), 0)
    grow = round(added["extract_s"] + after["first_query_s"], 2)
    print(f"{clips:,} clips: adding 10 videos: extract {added['extract_s']} s + next search "
          f"{after['first_query_s']} s = {grow} s", flush=True)  # fmt: skip
    return {"clips": built["clips"], "cache_gb": built["cache_gb"], "index_gb": first["index_gb"],
            "index_build_s": first["first_query_s"],
            "index_build_peak_rss_mb": first["peak_rss_mb"], **fresh, "add_10_extract_s": added["extract_s"],
            "add_10_next_search_s": after["first_query_s"], "add_10_total_s": grow}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="20,000 and 1,000,000 clips side by side")
    parser.add_argument("--work", type=Path, default=None, help="folder for the caches (default: a temporary one)")
    args = parser.parse_args()
    sizes = [20_000, 1_000_000] if args.full else [20_000]
    results: dict[str, Any] = {"benchmark": "library"}
    for clips in sizes:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            results[str(clips)] = measure(clips, Path(tmp))
    if args.full:
        small, big = results["20000"], results["1000000"]
        results["add_10_ratio_1m_to_20k"] = round(big["add_10_total_s"] / small["add_10_total_s"], 2)
        for key in ("peak_rss_mb", "warm_query_ms", "first_query_s", "add_10_total_s"):
            print(f"{key:>16}: {small[key]:>8} at 20,000 clips, {big[key]:>8} at 1,000,000", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
