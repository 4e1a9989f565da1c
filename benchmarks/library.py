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

    python benchmarks/library.py                  # quick: 20,000 clips
    python benchmarks/library.py --full           # 20,000 and 1,000,000 clips side by side (about 50 GB of disk)
    python benchmarks/library.py --index server   # and the coarse stage on Milvus beside it (lite, server, a URI):
                                                  # sync time, a query's coarse stage and whole, top-10 agreement with
                                                  # the built-in index, recall@500 of ivf_sq8 and hnsw against flat,
                                                  # deleting a video, the engine's memory

The last line printed is one JSON object.
"""

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
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
    warm, top10 = [], []
    for n in range(queries):
        t0 = time.perf_counter()
        hits = index.search([QUERIES[n % len(QUERIES)] + f" {n}"], top_k=10)[0][0]
        warm.append(time.perf_counter() - t0)
        top10.append([h.entry for h in hits])
    stats = {"first_query_s": round(first, 2), "warm_query_ms": round(1000 * float(np.mean(warm)), 1) if warm else 0,
             "peak_rss_mb": round(_peak_mb()), "clips": len(index), "top10": top10}  # fmt: skip
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


def _engine_sync(work: str, uri: str, out: str) -> None:
    """A fresh process brings the engine to the cache's state (the temporal encoder over every entry, then the rows
    written), then times dropping one video's entries and adding them back."""
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.options import EngineConfig
    from tcmgc_cli.search import open_search
    from tcmgc_cli.search.store import sync_store

    root = Path(work)
    start = time.perf_counter()
    index = open_search(root / "checkpoint.pt", root / "cache.h5", device="cpu", precision="fp32",
                        engine=EngineConfig(uri), sync=True)  # fmt: skip
    sync_s = time.perf_counter() - start
    cache = FeatureCache(root / "cache.h5")
    video = cache.videos()[-1]
    t0 = time.perf_counter()
    index.store.drop({cache.uid(video)})
    delete_ms = 1000 * (time.perf_counter() - t0)
    sync_store(index.store, cache)
    Path(out).write_text(json.dumps({"sync_s": round(sync_s, 1), "delete_one_video_ms": round(delete_ms, 1),
                                     "entries_engine": index.store.count(), "sync_peak_rss_mb": round(_peak_mb())}))  # fmt: skip


def _engine_search(work: str, uri: str, top10: list[list[str]], read_parts: bool, out: str) -> None:
    """A fresh search process on the engine: first results, warm queries whole and their coarse stage alone, the
    same top 10 as the built-in index or not, its peak RSS. read_parts: the candidates from the built-in index's
    parts (else from the cache, their temporal features computed per query)."""
    start = time.perf_counter()
    from tcmgc_cli.options import EngineConfig
    from tcmgc_cli.search import open_search

    root = Path(work)
    index = open_search(root / "checkpoint.pt", root / "cache.h5", device="cpu", precision="fp32",
                        engine=EngineConfig(uri), sync=False, read_parts=read_parts)  # fmt: skip
    index.search([QUERIES[0]], top_k=10)
    first = time.perf_counter() - start
    warm, coarse, same = [], [], []
    for n, want in enumerate(top10):
        query = QUERIES[n % len(QUERIES)] + f" {n}"
        t0 = time.perf_counter()
        hits = index.search([query], top_k=10)[0][0]
        warm.append(time.perf_counter() - t0)
        text, _ = index.encode_queries([query])
        t0 = time.perf_counter()
        index.shortlist(text, 500)
        coarse.append(time.perf_counter() - t0)
        same.append([h.entry for h in hits] == want)
    Path(out).write_text(json.dumps({"first_query_s": round(first, 2), "warm_query_ms": round(1000 * float(np.mean(warm)), 1),
                                     "coarse_stage_ms": round(1000 * float(np.mean(coarse)), 1),
                                     "same_top10_as_builtin": round(100 * float(np.mean(same)), 1),
                                     "peak_rss_mb": round(_peak_mb())}))  # fmt: skip


def _recall(work: str, uri: str, out: str, queries: int = 20, k: int = 500) -> None:
    """recall@k of each index type against the exact top k (numpy, float32), on the built-in index's own coarse
    vectors and query vectors near them, and each one's time a query. A hit counts when its exact score reaches the
    k-th best exact score (ties are not misses)."""
    from pymilvus import DataType, MilvusClient

    from tcmgc_cli.search.milvus import _INDEX_PARAMS, SEARCH_PARAMS

    vectors = np.concatenate([np.load(p) for p in sorted(Path(work).glob("cache.h5.d/index-*/part-*/coarse.npy"))])
    vectors = vectors.astype(np.float32)  # (E, D)
    rng = np.random.default_rng(1)
    picks = vectors[rng.integers(len(vectors), size=queries)] + 0.05 * rng.standard_normal((queries, vectors.shape[1]))
    picks = (picks / np.linalg.norm(picks, axis=1, keepdims=True)).astype(np.float32)  # (Q, D)
    exact = picks @ vectors.T  # (Q, E)
    kth = np.sort(exact, axis=1)[:, -k]  # (Q,) the k-th best exact score
    client = MilvusClient(uri=uri)
    stats: dict[str, Any] = {}
    for kind, (milvus_type, build) in _INDEX_PARAMS.items():
        name = f"bench_recall_{kind}"
        if client.has_collection(name):
            client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=milvus_type, metric_type="IP", params=build)
        client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
        for i in range(0, len(vectors), 4096):
            client.insert(
                name, [{"id": j, "vector": vectors[j].tolist()} for j in range(i, min(i + 4096, len(vectors)))]
            )
        client.flush(name)
        client.load_collection(name)
        while not _served(client, uri, name, len(vectors), kind == "flat"):
            time.sleep(0.2)
        t0 = time.perf_counter()
        hits = client.search(name, data=picks.tolist(), limit=k, anns_field="vector", output_fields=["id"],
                             search_params={"metric_type": "IP", "params": SEARCH_PARAMS[kind]}, consistency_level="Strong")  # fmt: skip
        stats[f"{kind}_ms_per_query"] = round(1000 * (time.perf_counter() - t0) / queries, 1)
        good = [sum(exact[q, int(h["id"])] >= kth[q] - 1e-5 for h in row) / k for q, row in enumerate(hits)]
        stats[f"{kind}_recall_at_{k}"] = round(float(np.mean(good)), 4)
        client.drop_collection(name)
    Path(out).write_text(json.dumps(stats))


def _served(client: Any, client_uri: str, name: str, rows: int, flat: bool) -> bool:
    """Every row indexed and the indexed segments loaded (until then a coarse interim index answers; a sealed
    segment of a FLAT collection gets no index and is searched exactly)."""
    if int(client.describe_index(name, "vector").get("indexed_rows", 0) or 0) < rows:
        return False
    if not client_uri.startswith("http"):  # Milvus Lite: searches every row as it is
        return True
    segments = client.list_loaded_segments(name)
    loaded = [s for s in segments if s.state_name == "Sealed" and (s.index_id or flat)]
    return len(loaded) == len(segments) and sum(s.num_rows for s in loaded) >= rows


def _vm_hwm_mb(pid: int) -> float:
    """A process's peak resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0.0


def measure_engine(work: Path, uri: str, top10: list[list[str]], server_pid: int | None) -> dict[str, Any]:
    synced = _in_process(_engine_sync, str(work), uri)
    print(f"engine {uri}: synced {synced}", flush=True)
    searched = _in_process(_engine_search, str(work), uri, top10, False)
    print(f"engine {uri}: fresh process, candidates from the cache {searched}", flush=True)
    with_parts = _in_process(_engine_search, str(work), uri, top10, True)
    print(f"engine {uri}: fresh process, candidates from the parts {with_parts}", flush=True)
    recall = _in_process(_recall, str(work), uri)
    print(f"engine {uri}: index types {recall}", flush=True)
    memory = {"server_peak_rss_mb": _vm_hwm_mb(server_pid)} if server_pid else {}
    return {"uri": uri, **synced, "from_cache": searched, "from_parts": with_parts, **recall, **memory}


def measure(clips: int, work: Path, engine: str | None = None) -> dict[str, Any]:
    built = _in_process(_build, str(work), clips)
    print(f"{clips:,} clips: cache built ({built['cache_gb']} GB, {built['add_tracks_s']:.0f} s)", flush=True)
    first = _in_process(_search, str(work), 0)
    first["index_gb"] = _size_gb(work / "cache.h5", "index-*/part-*/*")
    print(f"{clips:,} clips: first search (builds the index) {first['first_query_s']} s, "
          f"{first['index_gb']} GB", flush=True)  # fmt: skip
    fresh = _in_process(_search, str(work), 10)
    print(f"{clips:,} clips: fresh process { ({k: v for k, v in fresh.items() if k != 'top10'}) }", flush=True)
    engines = {}
    if engine is not None:
        with _engine_uri(engine, work) as (uri, pid):
            engines = {"engine": measure_engine(work, uri, fresh.pop("top10"), pid)}
    fresh.pop("top10", None)
    added = _in_process(_add, str(work))
    after = _in_process(_search, str(work), 0)
    grow = round(added["extract_s"] + after["first_query_s"], 2)
    print(f"{clips:,} clips: adding 10 videos: extract {added['extract_s']} s + next search "
          f"{after['first_query_s']} s = {grow} s", flush=True)  # fmt: skip
    return {"clips": built["clips"], "cache_gb": built["cache_gb"], "index_gb": first["index_gb"],
            "index_build_s": first["first_query_s"],
            "index_build_peak_rss_mb": first["peak_rss_mb"], **fresh, "add_10_extract_s": added["extract_s"],
            "add_10_next_search_s": after["first_query_s"], "add_10_total_s": grow, **engines}  # fmt: skip


@contextlib.contextmanager
def _engine_uri(engine: str, work: Path) -> Iterator[tuple[str, int | None]]:
    """--index: a URI as given; "lite": a Milvus Lite file in the work folder; "server": a Milvus standalone server
    started here (the `milvus` package) and stopped after, with its pid for its memory."""
    if engine == "lite":
        yield str(work / "engine.db"), None
    elif engine == "server":
        import socket

        from milvus import MilvusServer

        server = MilvusServer()
        server.set_base_dir(str(work / "milvus"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            server.listen_port = probe.getsockname()[1]
        server.start()
        try:
            yield f"http://127.0.0.1:{server.listen_port}", _server_pid(server)
        finally:
            server.stop()
    else:
        yield engine, None


def _server_pid(server: Any) -> int | None:
    proc = getattr(server, "server_proc", None) or getattr(server, "_server_proc", None)
    return int(proc.pid) if proc is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="20,000 and 1,000,000 clips side by side")
    parser.add_argument("--work", type=Path, default=None, help="folder for the caches (default: a temporary one)")
    parser.add_argument("--index", default=None, help="also measure the coarse stage on Milvus, beside the built-in "
                        "index: lite (a Milvus Lite file), server (a standalone server started here) or a URI")  # fmt: skip
    args = parser.parse_args()
    sizes = [20_000, 1_000_000] if args.full else [20_000]
    results: dict[str, Any] = {"benchmark": "library"}
    for clips in sizes:
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            results[str(clips)] = measure(clips, Path(tmp), args.index)
    if args.full:
        small, big = results["20000"], results["1000000"]
        results["add_10_ratio_1m_to_20k"] = round(big["add_10_total_s"] / small["add_10_total_s"], 2)
        for key in ("peak_rss_mb", "warm_query_ms", "first_query_s", "add_10_total_s"):
            print(f"{key:>16}: {small[key]:>8} at 20,000 clips, {big[key]:>8} at 1,000,000", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
