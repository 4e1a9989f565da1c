"""tcmgc search on real decoded sample video through a quickly trained tiny model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.cli import app
from tcmgc_cli.search import SearchIndex
from tcmgc_cli.search.explain import word_attention
from tcmgc_cli.search.moments import non_overlapping, window_proxy, window_scores

runner = CliRunner()


@pytest.fixture(scope="module")
def run(trained_run: tuple[Path, Path]) -> Path:
    return trained_run[0]


def search(run: Path, cache: Path, *args: str) -> object:
    return runner.invoke(app, ["search", *args, "--checkpoint", str(run), "--cache", str(cache)])


def all_inputs(index: SearchIndex) -> tuple[torch.Tensor, torch.Tensor]:
    return index.collection.entry_inputs(torch.arange(len(index)))


def test_window_proxy_against_a_loop() -> None:
    rel = np.array([0.1, 0.5, 0.9, 0.8, 0.2, 0.0])
    windows = [(1, 2), (2, 4), (3, 5), (1, 5)]
    got = window_proxy(rel, windows, 1, 5)
    assert got[3] == pytest.approx(np.mean(rel[1:5]))  # the whole range: nothing outside
    for (a, b), g in zip(windows[:3], got, strict=False):
        inside = [rel[i] for i in range(a, b)]
        outside = [rel[i] for i in range(1, 5) if not a <= i < b]
        assert g == pytest.approx(sum(inside) / len(inside) - sum(outside) / len(outside))


def test_non_maximum_suppression_keeps_the_best_that_do_not_overlap() -> None:
    windows = [(0, 4), (2, 6), (4, 8), (5, 7), (8, 9)]
    assert non_overlapping(windows, [0.9, 0.95, 0.5, 0.4, 0.1], keep=10) == [1, 4]  # (2, 6) beats both neighbours
    assert non_overlapping(windows, [0.9, 0.1, 0.8, 0.4, 0.3], keep=2) == [0, 2]  # touching ends do not overlap


def test_search_json_lines(run: Path, sample_cache: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("a red circle moves left\n\na blue square moves up\n")
    result = search(run, sample_cache, "--queries", str(queries), "--top-k", "5", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    lines = [json.loads(x) for x in result.stdout.splitlines()]  # type: ignore[attr-defined]
    assert [x["query"] for x in lines] == ["a red circle moves left", "a blue square moves up"]
    for line in lines:
        hits = line["results"]
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
        for h in hits:
            assert set(h) == {"rank", "video_id", "score", "path", "start_sec", "end_sec", "moments", "scorer", "entry"}
            assert h["scorer"] == line["scorer"] == "tcmgc" and h["moments"]
            assert Path(h["path"]).is_file() and h["path"].endswith(h["video_id"] + ".mp4")
            assert 0 <= h["start_sec"] < h["end_sec"] <= 4.5
            assert (h["start_sec"], h["end_sec"]) == (h["moments"][0]["start_sec"], h["moments"][0]["end_sec"])


def test_two_stage_equals_exhaustive_when_shortlist_is_everything(run: Path, sample_cache: Path) -> None:
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.checkpoint import load_trained
    from tcmgc_cli.search import SearchIndex

    index = SearchIndex.from_cache(load_trained(run, "cpu"), FeatureCache(sample_cache))
    text, _ = index.encode_queries(["a green triangle moves down"])
    hits = index.search_features(text, top_k=10, candidates=len(index))[0]
    # the independent side: the training path (direct LVA, one pooled vector per pair) over the same features
    from tcmgc_cli.model.tcmgc import VideoFeatures

    with torch.no_grad():
        frames = all_inputs(index)[0]
        direct = index.trained.model(
            text, VideoFeatures(frames, index.temporal_of(torch.arange(len(index))), None, None)
        )["logits"][0]
    want = [index.ids[i] for i in direct.argsort(descending=True)[:10].tolist()]
    assert [h.video_id for h in hits] == want
    for h in hits:
        assert h.score == pytest.approx(float(direct[index.ids.index(h.video_id)]), rel=1e-4)
    few = index.search_features(text, top_k=3, candidates=5)[0]
    assert len(few) == 3 and {h.video_id for h in few} <= set(index.ids)


def test_unconditioned_head_scores_its_frames_as_the_model_does(sample_cache: Path) -> None:
    """X-CLIP's head (no text conditioning) reads the raw frames besides the temporal features: the index gives them."""
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.checkpoint import Trained
    from tcmgc_cli.model.encoder import Tokenizer
    from tcmgc_cli.model.factory import create_model, resolve_spec
    from tcmgc_cli.model.tcmgc import VideoFeatures

    torch.manual_seed(0)
    spec = resolve_spec("tcmgc-tiny", "none", {"text_conditioning": False})
    model = create_model(spec).eval()
    trained = Trained(model, spec, Tokenizer(spec.clip, spec.config.max_words), torch.device("cpu"), "", False)
    index = SearchIndex.from_cache(trained, FeatureCache(sample_cache))
    assert index.ranker.reads_frames
    text, _ = index.encode_queries(["a green triangle moves down"])
    every = torch.arange(len(index))
    frames = all_inputs(index)[0]
    with torch.no_grad():
        direct = model(text, VideoFeatures(frames, index.temporal_of(every), None, None))["logits"][0]
    np.testing.assert_allclose(index.full_scores(text, every)[0].numpy(), direct.numpy(), rtol=1e-4, atol=1e-4)


def test_explain_table_and_png(run: Path, sample_cache: Path, tmp_path: Path) -> None:
    png = tmp_path / "e.png"
    result = search(
        run, sample_cache, "a red circle moves left", "--explain", "--video", "video3", "--explain-png", str(png)
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "circle" in result.stdout and png.read_bytes()[:4] == b"\x89PNG"  # type: ignore[attr-defined]


def test_bad_queries(run: Path, sample_cache: Path) -> None:
    empty = search(run, sample_cache, "   ")
    assert empty.exit_code == 2 and "empty" in empty.output  # type: ignore[attr-defined]
    long = search(run, sample_cache, " ".join(["red"] * 40), "--top-k", "1")
    assert long.exit_code == 0 and "only its start is used" in long.output  # type: ignore[attr-defined]
    neither = runner.invoke(app, ["search"])
    assert neither.exit_code == 2 and "--queries" in neither.output


def test_blockwise_coarse_topk_equals_full_topk() -> None:
    from tcmgc_cli.search.store import coarse_topk

    g = torch.Generator().manual_seed(0)
    coarse = torch.nn.functional.normalize(torch.randn(1000, 16, generator=g), dim=-1).half()
    queries = torch.randn(3, 16, generator=g)
    got = coarse_topk(coarse, queries, 25, block=64)
    whole = coarse_topk(coarse, queries, 25, block=5000)
    assert all(
        set(a.tolist()) == set(b.tolist()) for a, b in zip(got, whole, strict=True)
    )  # merging blocks loses nothing
    exact = (queries @ coarse.float().T).topk(5, dim=1).indices  # half precision keeps the clear winners
    assert all(set(e.tolist()) <= set(g.tolist()) for e, g in zip(exact, got, strict=True))


def test_the_index_grows_with_the_cache(run: Path, sample_cache: Path, tmp_path: Path) -> None:
    """Only new or changed tracks run through the temporal encoder; merges reuse what was computed; the grown index
    scores every entry as one built from scratch does."""
    from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache
    from tcmgc_cli.checkpoint import load_trained
    from tcmgc_cli.search import open_index
    from tests.helpers import copy_cache, random_frames, write_video

    cache_path = copy_cache(sample_cache, tmp_path / "c.h5")
    trained = load_trained(run, "cpu")
    encoded: list[int] = []

    def grown() -> SearchIndex:
        encoded.clear()
        return open_index(trained, run, FeatureCache(cache_path), encoded.append)

    def same_as_from_scratch(index: SearchIndex) -> None:
        scratch = SearchIndex.from_cache(trained, FeatureCache(cache_path))
        assert sorted(index.ids) == sorted(scratch.ids) and sorted(index.collection.videos) == sorted(
            scratch.collection.videos
        )
        text, _ = index.encode_queries(["a red circle moves left", "a blue square"])
        mine = index.full_scores(text, torch.arange(len(index)))
        theirs = scratch.full_scores(text, torch.tensor([scratch.ids.index(e) for e in index.ids]))
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)

    first = grown()
    assert sum(encoded) == 120 and len(first) == 120
    grown()
    assert sum(encoded) == 0  # the same cache: nothing runs again
    folder = tmp_path / "new"
    folder.mkdir()
    for n in range(3):
        write_video(folder / f"new{n}.mp4", random_frames(8, seed=n), fps=4)
    write_video(folder / "video5.mp4", random_frames(12, seed=9), fps=4)  # a changed file for a known id
    args = ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache_path), "--workers",
            "0", "--window-seconds", "0", "--json"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    index = grown()
    assert sum(encoded) == 4 and len(index) == 123  # three new videos and the changed one, nothing else
    assert index.collection.counts[index.collection.videos.index("video5")] == 3  # the new version only
    same_as_from_scratch(index)
    cache = FeatureCache(cache_path)
    writer = CacheWriter(cache_path, CacheSettings(**cache.settings.__dict__))
    writer.add([], removed=["video7"])
    writer.compact(full=True)  # every segment merged into one: the tracks are the same, so nothing runs again
    writer.close()
    index = grown()
    assert sum(encoded) == 0 and len(index) == 122 and "video7" not in index.collection.videos
    same_as_from_scratch(index)


def test_explain_and_moments_leave_zero_padded_slots_out(run: Path, sample_cache: Path) -> None:
    """sample_cache is a dataset run: 1 fps and zero padding, so most of tcmgc-tiny's 8 slots are padding."""
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.search import open_search

    cache = FeatureCache(sample_cache)
    index = open_search(run, sample_cache)
    hits = index.search(["a red circle moves left"], top_k=10)[0][0]
    for hit in hits:
        frames = cache.num_frames_of(hit.video_id)
        assert frames < 8  # padded
        for m in hit.moments:  # whole frames of the track, never a padded slot
            assert m["start_sec"] in range(frames) and m["end_sec"] <= cache.duration(hit.video_id)
    words, weights, times = word_attention(index, "a red circle", hits[0].video_id)
    assert weights.shape == (len(words), cache.num_frames_of(hits[0].video_id)) == (len(words), len(times))


def test_a_window_scores_as_the_model_scores_it_in_training(run: Path, sample_cache: Path) -> None:
    """The moment path against the training path: the window's frames in the first slots, the padding feature in
    the rest, the mask, the temporal encoder and the direct LVA, built here by a loop."""
    from tcmgc_cli.search import open_search

    index = open_search(run, sample_cache)
    c, model = index.collection, index.trained.model
    text, _ = index.encode_queries(["a blue square moves up", "a red circle"])
    windows = [(0, 0, 1), (3, 1, 3), (7, 0, c.counts[7]), (11, 2, 3)]
    got = window_scores(index.ranker, c, text, windows)
    from tcmgc_cli.model.tcmgc import VideoFeatures

    for n, (v, a, b) in enumerate(windows):
        track = c.track_frames(v)  # (n, D)
        slots = [track[i] for i in range(a, b)]
        slots += [torch.from_numpy(c.pad)] * (c.num_frames - len(slots))
        frames = torch.stack(slots)[None]  # (1, T, D)
        mask = torch.tensor([[i < b - a for i in range(c.num_frames)]])
        with torch.no_grad():
            video = model.encode_video(frames, mask)
            want = model(text, VideoFeatures(frames, video.temporal, None, None))["logits"][:, 0]
        np.testing.assert_allclose(got[:, n], want.numpy(), rtol=1e-4, atol=1e-4)


def test_moments_inside_one_video(run: Path, sample_cache: Path) -> None:
    result = search(run, sample_cache, "a red circle moves left", "--video", "video3", "--moments", "5", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    hits = json.loads(result.stdout)["results"]  # type: ignore[attr-defined]
    assert [h["video_id"] for h in hits] == ["video3"] and 1 <= len(hits[0]["moments"]) <= 5
    unknown = search(run, sample_cache, "a red circle", "--video", "nope")
    assert unknown.exit_code == 2 and "not in the cache" in unknown.output  # type: ignore[attr-defined]


QUERIES = ["a red circle moves left", "a blue square moves up", "a green triangle moves down", "a white square"]


@pytest.fixture(scope="module")
def index(run: Path, sample_cache: Path) -> SearchIndex:
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.checkpoint import load_trained
    from tcmgc_cli.search import SearchIndex

    return SearchIndex.from_cache(load_trained(run, "cpu"), FeatureCache(sample_cache))


def test_each_query_scores_its_own_shortlist_together_or_alone(index: SearchIndex) -> None:
    from tcmgc_cli.model.tcmgc import VideoFeatures

    text, _ = index.encode_queries(QUERIES)
    with torch.no_grad():  # the independent side: the training path's direct LVA over every pair
        frames = all_inputs(index)[0]
        direct = index.trained.model(
            text, VideoFeatures(frames, index.temporal_of(torch.arange(len(index))), None, None)
        )["logits"]
    shared = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]])  # one union of 3: scored in one pass
    apart = torch.arange(12).view(4, 3)  # a union of 12 > 2 x 3: scored query by query
    for shortlist in (shared, apart):
        got = index._shortlist_scores(text, shortlist)
        torch.testing.assert_close(got, direct.gather(1, shortlist), rtol=1e-4, atol=1e-4)


def test_queries_in_company_get_what_they_get_alone(index: SearchIndex) -> None:
    for candidates in (len(index), 3):
        together = index.search(QUERIES, top_k=5, candidates=candidates)[0]
        for query, hits in zip(QUERIES, together, strict=True):
            alone = index.search([query], top_k=5, candidates=candidates)[0][0]
            assert [h.entry for h in hits] == [h.entry for h in alone]
            assert [h.score for h in hits] == pytest.approx([h.score for h in alone], rel=1e-5)
            assert [(h.start_sec, h.end_sec) for h in hits] == [(h.start_sec, h.end_sec) for h in alone]


def test_queries_waiting_for_the_server_are_answered_in_one_pass(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.serve.batching import SearchBatcher

    calls: list[tuple[list[str], int]] = []
    real = index.search

    def spy(queries: list[str], top_k: int = 10, candidates: int = 500, per_video: int = 1, *rest: object) -> object:
        calls.append((list(queries), top_k))
        return real(queries, top_k, candidates, per_video)

    monkeypatch.setattr(index, "search", spy)
    slots = threading.BoundedSemaphore(1)
    with slots:  # the only worker cannot start: every query below waits in the queue
        batcher = SearchBatcher(index, slots, workers=1)
        waiting = [batcher.submit(QUERIES[0], 5), batcher.submit(QUERIES[1], 5), batcher.submit(QUERIES[2], 2),
                   batcher.submit("   ", 5), batcher.submit(QUERIES[3], 5)]  # fmt: skip
    answers = [w.exception(timeout=60) or w.result() for w in waiting]
    batcher.close()
    assert calls[0] == ([QUERIES[0], QUERIES[1], "   ", QUERIES[3]], 5)  # one pass for the four with equal options
    assert calls[-1] == ([QUERIES[2]], 2)  # then the one with other options
    assert isinstance(answers[3], ConfigError)  # the empty query fails alone; the batch is retried one by one
    for answer, query, k in zip(answers, QUERIES[:3], (5, 5, 2), strict=False):
        assert isinstance(answer, list)
        assert [h.entry for h in answer] == [h.entry for h in real([query], k)[0][0]]


def test_kept_lva_tensors_score_as_those_computed_per_query(index: SearchIndex) -> None:
    fresh = index.fresh()
    text, _ = fresh.encode_queries(QUERIES)
    half = torch.arange(len(index) // 2)
    first = fresh.full_scores(text, half)
    assert fresh.lva is None  # half the collection's tensors computed: not yet worth keeping
    fresh.full_scores(text, half)
    assert fresh.lva is not None and len(fresh.lva.keys) == len(index)  # a whole collection's worth: kept
    per_query = index.fresh(keep_bytes=0)
    every = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fresh.full_scores(text, every), per_query.full_scores(text, every), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fresh.full_scores(text, half), first, rtol=1e-5, atol=1e-6)
    assert per_query.lva is None


def test_a_query_given_up_while_waiting_is_dropped_and_the_worker_lives_on(index: SearchIndex) -> None:
    import threading

    from tcmgc_cli.serve.batching import SearchBatcher

    slots = threading.BoundedSemaphore(1)
    with slots:
        batcher = SearchBatcher(index, slots, workers=1)
        gone, kept = batcher.submit(QUERIES[0], 5), batcher.submit(QUERIES[1], 5)
        assert gone.cancel()  # the client disconnected before a worker was free
    alone = [h.entry for h in index.search([QUERIES[1]], 5)[0][0]]
    assert [h.entry for h in kept.result(timeout=30)] == alone
    assert batcher.submit(QUERIES[2], 5).result(timeout=30)
    batcher.close()


def test_row_files_read_exactly_the_rows_asked(tmp_path: Path) -> None:
    """Positioned reads of scattered rows (runs, repeats, several parts, threads) against numpy's own indexing."""
    from tcmgc_cli.search.rows import RowFile, Stack

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((n, 3, 4)).astype(np.float16) for n in (50, 7, 90)]
    for k, a in enumerate(arrays):
        np.save(tmp_path / f"{k}.npy", a)
    stack = Stack([RowFile(tmp_path / f"{k}.npy") for k in range(3)])
    whole = np.concatenate(arrays)
    rows = rng.integers(0, len(whole), size=(40, 5))  # (40, 5): scattered, with repeats and consecutive runs
    rows[0] = [10, 11, 12, 13, 10]
    np.testing.assert_array_equal(stack.take(rows), whole[rows])
    np.testing.assert_array_equal(stack.parts[2].rows(85, 90), arrays[2][85:])


def test_a_batch_runs_its_moment_windows_through_the_temporal_encoder_once(
    index: SearchIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The windows of all queries of a batch go through the temporal encoder in one pass (a window's temporal
    features do not depend on the query), and each query still gets the moments it gets alone."""
    alone = [index.search([q], top_k=3)[0][0] for q in QUERIES[:3]]
    calls: list[int] = []
    real = index.ranker.temporal
    monkeypatch.setattr(index.ranker, "temporal", lambda f, m: calls.append(len(f)) or real(f, m))
    together = index.search(QUERIES[:3], top_k=3)[0]
    assert len(calls) == 1 and calls[0] > 0
    for hits, want in zip(together, alone, strict=True):
        assert [(h.video_id, h.moments and h.moments[0]["start_sec"]) for h in hits] == [
            (h.video_id, h.moments and h.moments[0]["start_sec"]) for h in want
        ]
