"""One conformance suite for the search's coarse stage, run on the built-in index, Milvus Lite (a local file) and a
real Milvus standalone server that the fixture starts from the `milvus` package (on a free port, in a temporary
folder, stopped after): the same top 10 as the built-in index, growth, prune, replace, a sync killed with -9 and run
again, and the one line that says an engine lags its cache."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache, add_tracks
from tcmgc_cli.cli import app
from tcmgc_cli.options import EngineConfig
from tests.helpers import ROOT, SAMPLE_MSRVTT, copy_cache, random_frames, write_video

runner = CliRunner()
ENGINES = ["builtin", "lite", "server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus standalone server (2.3.5, embedded etcd) for the session: its URI. Two clocks run faster than a
    deployment's (what is tested is that the stores wait for them, not how long): the query coordinator looks for
    newly built indexes every 0.5 s instead of 5 s, and the proxy ticks every 50 ms instead of 200 ms (a Strong read
    waits for a tick: 90 ms a call instead of 350 ms)."""
    milvus = pytest.importorskip("milvus", reason="the `milvus` package (a standalone server) does not install here")
    server = milvus.MilvusServer()
    server.config.set("queryCoord.checkHandoffInterval", 500)
    server.config.set("proxy.timeTickInterval", 50)
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    server.listen_port = free_port()
    server.start()
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The --index of each engine (None: the built-in index)."""
    if request.param == "builtin":
        return None
    if request.param == "lite":
        pytest.importorskip("milvus_lite", reason="Milvus Lite does not install here")
        return str(tmp_path / "engine.db")
    uri: str = request.getfixturevalue("milvus_server")
    return uri


def index_args(engine: str | None) -> list[str]:
    return [] if engine is None else ["--index", engine]


def status(engine: str | None, cache: Path, *extra: str) -> dict[str, object]:
    result = runner.invoke(app, ["index", "status", *index_args(engine), "--cache", str(cache), *extra, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def synthetic_cache(tmp_path: Path, tracks: int) -> Path:
    """A cache that `tcmgc extract` started (one short video), grown by `tracks` random 60-second tracks (15
    entries each, windows of 4 s)."""
    cache = tmp_path / "c.h5"
    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "seed.mp4", random_frames(4, seed=1), fps=4)
    assert runner.invoke(app, ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache),
                               "--workers", "0", "--window-seconds", "4", "--json"]).exit_code == 0  # fmt: skip
    rng = np.random.default_rng(0)
    dim = len(FeatureCache(cache).padding_feature)
    add_tracks(cache, [(f"t{n}", np.arange(60.0), rng.normal(size=(60, dim)).astype(np.float32), "none")
                       for n in range(tracks)])  # fmt: skip
    return cache


def test_the_same_top_10_as_the_built_in_index(
    engine: str | None, trained_run: tuple[Path, Path], sample_cache: Path, tmp_path: Path
) -> None:
    """Every query of the sample's test captions: the same videos and moments, and the same scores (to float
    rounding: an engine's search computes its candidates' temporal features per query from the cache, in batches of
    another size, where the built-in index reads what it computed once)."""
    from tcmgc_cli.search import open_search

    run, _ = trained_run
    cache = copy_cache(sample_cache, tmp_path / "c.h5")
    queries = [
        line.rsplit(",", 1)[1] for line in (SAMPLE_MSRVTT / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[1:]
    ]
    built_in = open_search(run, cache).search(queries, top_k=10)[0]
    for read_parts in (False, True):  # the candidates from the cache alone, or from the built-in parts beside it
        index = open_search(run, cache, engine=EngineConfig.of(engine or ""), read_parts=read_parts)
        assert not index.notes  # in sync after opening with sync
        for want, got in zip(built_in, index.search(queries, top_k=10)[0], strict=True):
            assert [h.video_id for h in got] == [h.video_id for h in want]
            assert [[(m["start_sec"], m["end_sec"]) for m in h.moments] for h in got] == [
                [(m["start_sec"], m["end_sec"]) for m in h.moments] for h in want
            ]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-3, atol=1e-4)
    cli = runner.invoke(app, ["search", queries[0], "--checkpoint", str(run), "--cache", str(cache), "--json",
                              *index_args(engine)])  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert [h["video_id"] for h in json.loads(cli.stdout)["results"]] == [h.video_id for h in built_in[0]]


@pytest.mark.parametrize("engine", ["lite", "server"], indirect=True)
def test_growth_prune_and_replace_keep_the_engine_in_step(engine: str, video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"

    def extract(*extra: str) -> None:
        result = runner.invoke(app, ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache",
                                     str(cache), "--workers", "0", "--json", "--index", engine, *extra])  # fmt: skip
        assert result.exit_code == 0, result.output

    extract()
    assert status(engine, cache) == {"entries_cache": 4, "entries_engine": 4, "in_sync": True}
    for n in range(2):  # growth
        write_video(video_dir / f"new{n}.mp4", random_frames(12, seed=n), fps=4)
    write_video(video_dir / "video0.mp4", random_frames(16, seed=9), fps=4)  # a known id, another file: replace
    extract()
    assert status(engine, cache) == {"entries_cache": 6, "entries_engine": 6, "in_sync": True}
    (video_dir / "video1.mp4").unlink()
    (video_dir / "new0.mp4").unlink()
    extract("--prune")
    assert status(engine, cache) == {"entries_cache": 4, "entries_engine": 4, "in_sync": True}
    result = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--index", engine, "--json",
                                 "--top-k", "10"])  # fmt: skip
    found = {h["video_id"] for h in json.loads(result.stdout)["results"]}
    assert found == {"video0", "video2", "video3", "new1"}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["lite", "server"], indirect=True)
def test_a_sync_killed_at_any_moment_then_run_again_ends_exact(engine: str, tmp_path: Path) -> None:
    """kill -9 during `tcmgc index sync` (at several moments), then a full run: exactly the cache's entries."""
    cache = synthetic_cache(tmp_path, tracks=300)
    entries = len(FeatureCache(cache))
    argv = [sys.executable, "-m", "tcmgc_cli", "index", "sync", "--index", engine, "--cache", str(cache), "--scorer",
            "clip", "--batch-size", "20", "--json"]  # small batches: many moments to be killed at  # fmt: skip
    env = dict(os.environ)
    for delay in (2.0, 4.0, 6.0):
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"entries_cache": entries, "entries_engine": entries, "in_sync": True}


@pytest.mark.parametrize("engine", ["lite", "server"], indirect=True)
def test_a_search_on_an_engine_that_lags_says_so(engine: str, video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    base = ["--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache", str(cache), "--workers", "0", "--json"]
    assert runner.invoke(app, ["extract", *base, "--index", engine]).exit_code == 0
    write_video(video_dir / "late.mp4", random_frames(8, seed=3), fps=4)
    assert runner.invoke(app, ["extract", *base]).exit_code == 0  # the engine is not told
    assert status(engine, cache)["in_sync"] is False
    result = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--index", engine])
    assert result.exit_code == 0 and "lags its cache (4 of 5 entries)" in result.output
    assert "tcmgc index sync" in result.output


def test_an_engine_that_does_not_answer_is_one_line(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    assert runner.invoke(app, ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache", str(cache),
                               "--workers", "0", "--json"]).exit_code == 0  # fmt: skip
    uri = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--index", uri])
    assert result.exit_code == 1 and uri in result.output and "Traceback" not in result.output
    bad = runner.invoke(app, ["search", "a red circle", "--cache", str(cache), "--index", "engine.txt"])
    assert bad.exit_code == 2 and "Milvus Lite file" in bad.output


def test_an_approximate_index_answers_only_once_built_and_loaded(milvus_server: str, tmp_path: Path) -> None:
    """Under HNSW a server answers rows from a coarse interim index until their segments are sealed, indexed and
    loaded (seconds after a write): a sync returns only after every row is in a loaded sealed segment, indexed
    unless it is under 1,024 rows (Milvus indexes no smaller segment; with the video as partition key across 64
    partitions, this cache's 1,501 entries are all in such segments), and later commands keep the collection's
    index type whatever --index-type they pass."""
    from pymilvus import MilvusClient

    cache = synthetic_cache(tmp_path, tracks=100)
    synced = runner.invoke(app, ["index", "sync", "--index", milvus_server, "--cache", str(cache), "--scorer", "clip",
                                 "--index-type", "hnsw", "--json"])  # fmt: skip
    assert synced.exit_code == 0, synced.output
    client = MilvusClient(uri=milvus_server)
    hnsw = [
        n for n in client.list_collections() if (client.describe_index(n, "vector") or {}).get("index_type") == "HNSW"
    ]
    segments = client.list_loaded_segments(hnsw[0])
    assert len(hnsw) == 1 and all(s.state_name == "Sealed" and (s.index_id or s.num_rows < 1024) for s in segments)
    assert sum(s.num_rows for s in segments) == json.loads(synced.stdout)["entries_cache"]
    search = ["search", "a red circle", "--cache", str(cache), "--scorer", "clip", "--json"]
    built_in = runner.invoke(app, search)
    on_hnsw = runner.invoke(app, [*search, "--index", milvus_server])
    assert json.loads(on_hnsw.stdout)["results"] == json.loads(built_in.stdout)["results"]
