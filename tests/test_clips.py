"""Long videos become overlapping clips: planning, decoding both backends, the cache's clip API, resume, bad input."""

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cli import app
from tcmgc_cli.data.sampling import clip_frame_indices, clip_spans
from tests.helpers import write_video

runner = CliRunner()
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def long_video(path: Path, seconds: int = 40, fps: int = 2, size: int = 32) -> Path:
    """One solid colour per 10-second stretch (red, green, blue, yellow), so every frame tells its time."""
    frames = np.zeros((seconds * fps, size, size, 3), dtype=np.uint8)
    for n in range(len(frames)):
        frames[n] = COLORS[(n // (10 * fps)) % len(COLORS)]
    return write_video(path, frames, fps=fps)


def test_clip_spans_cover_the_video_without_gaps() -> None:
    assert clip_spans(8.0, 15.0, 7.5) == [(0.0, 8.0)]  # shorter than a window: one clip
    assert clip_spans(100.0, 0.0, 0.0) == [(0.0, 100.0)]  # window 0: whole video
    cases = [(40.0, 10.0, 5.0), (37.3, 10.0, 5.0), (61.0, 15.0, 7.5), (30.0, 10.0, 10.0), (30.1, 10.0, 10.0),
             (600.04, 15.0, 7.5), (20.1, 10.0, 9.9)]  # fmt: skip
    for duration, window, stride in cases:
        spans = clip_spans(duration, window, stride)
        assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(duration)
        assert all(b - a == pytest.approx(window) for a, b in spans)
        assert all(nxt[0] <= cur[1] for cur, nxt in zip(spans, spans[1:], strict=False))  # no gaps
        assert all(nxt[0] - cur[0] <= 1.02 * stride for cur, nxt in zip(spans, spans[1:], strict=False))
    assert len(clip_spans(40.0, 10.0, 5.0)) == 7
    # 600 s in 15 s windows every 7.5 s: 79, whether a decoder measures 600.00 s or 600.04 s
    assert len(clip_spans(600.0, 15.0, 7.5)) == len(clip_spans(600.04, 15.0, 7.5)) == 79
    assert len(clip_spans(600.5, 15.0, 7.5)) == 80  # half a second more is a window of its own


def test_clip_frame_indices_against_a_loop() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    got = clip_frame_indices(times, 1.0, 3.0, 4)  # targets 1.0, 1.5, 2.0, 2.5
    want = [max(i for i, t in enumerate(times) if t <= target) for target in (1.0, 1.5, 2.0, 2.5)]
    assert got == want == [2, 3, 4, 5]


@pytest.fixture
def long_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "long"
    folder.mkdir()
    long_video(folder / "walk.mp4")
    write_video(folder / "short.mp4", np.full((6, 32, 32, 3), 128, dtype=np.uint8), fps=2)  # 3 s
    return folder


def extract(folder: Path, cache: Path, *extra: str) -> dict[str, object]:
    result = runner.invoke(app, ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache),
                                 "--workers", "0", "--clip-seconds", "10", "--clip-stride", "5", "--json", *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_long_video_is_indexed_as_clips(long_dir: Path, tmp_path: Path, backend: str) -> None:
    cache_path = tmp_path / f"{backend}.h5"
    extract(long_dir, cache_path, "--backend", backend, "--store-frames")
    cache = FeatureCache(cache_path)
    assert sorted(cache.videos()) == ["short", "walk"]
    assert cache.clips("short") == [(0.0, 3.0)] and cache.clip_ids("short") == ["short"]
    assert cache.embeddings("short").shape == (8, 32)  # a whole video keeps its id
    spans = cache.clips("walk")
    assert spans == [(5.0 * k, 5.0 * k + 10.0) for k in range(7)]
    ids = cache.clip_ids("walk")
    assert ids == [f"walk@{k:04d}" for k in range(7)] and set(ids) <= set(cache.ids())
    for (start, end), rid in zip(spans, ids, strict=True):
        record = cache.record(rid, with_frames=True)
        assert start <= record.timestamps.min() and record.timestamps.max() < end
        assert record.frames is not None
        for frame, t in zip(record.frames, record.timestamps, strict=True):  # the colour of its 10-second stretch
            want = COLORS[int(t // 10) % len(COLORS)]
            assert np.abs(frame[16, 16].astype(int) - want).max() <= 8, (rid, t)
    with pytest.raises(KeyError, match="clip_ids"):
        cache.embeddings("walk")


def test_rerun_skips_and_a_shorter_new_version_replaces_every_clip(long_dir: Path, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.h5"
    extract(long_dir, cache_path)
    again = extract(long_dir, cache_path)
    assert again["extracted"] == [] and sorted(again["cached"]) == ["short", "walk"]  # type: ignore[call-overload]
    long_video(long_dir / "walk.mp4", seconds=20)
    os.utime(long_dir / "walk.mp4", ns=(1, 1))
    third = extract(long_dir, cache_path)
    assert third["extracted"] == ["walk"]
    cache = FeatureCache(cache_path)
    assert cache.clips("walk") == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]
    assert not [i for i in cache.ids() if i.startswith("walk@0003")]  # the old version's later clips are gone


def test_bad_clip_options(long_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import SAMPLE_MSRVTT

    base = ["extract", "--model", "tcmgc-tiny", "--cache", str(tmp_path / "c.h5"), "--workers", "0"]
    gaps = runner.invoke(app, [*base, "--videos", str(long_dir), "--clip-seconds", "10", "--clip-stride", "20"])
    assert gaps.exit_code == 2 and "between clips" in gaps.output
    negative = runner.invoke(app, [*base, "--videos", str(long_dir), "--clip-seconds", "-1"])
    assert negative.exit_code == 2 and "at least 0" in negative.output
    dataset = runner.invoke(
        app, [*base, "--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), "--clip-seconds", "5"]
    )
    assert dataset.exit_code == 2 and "one entry per video" in dataset.output


def test_a_clip_that_fails_to_decode_is_left_out_and_the_others_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tcmgc_cli.config import SamplingConfig
    from tcmgc_cli.data import video as video_module
    from tcmgc_cli.data.sampling import ClipPlan

    class DamagedInTheMiddle:
        """40 s at 2 fps whose frames 30-33 (15-17 s) do not decode."""

        num_frames, fps = 80, 2.0
        times = np.arange(80) / 2.0
        failed: set[int] = set()

        def get_frames(self, indices: list[int], transform: object = None) -> tuple[np.ndarray, np.ndarray]:
            self.failed = {i for i in indices if 30 <= i <= 33}
            return np.zeros((len(indices), 4, 4, 3), np.uint8), self.times[indices].astype(np.float32)

    path = tmp_path / "v.mp4"
    path.write_bytes(b"x")
    monkeypatch.setattr(video_module, "open_video", lambda p, b: DamagedInTheMiddle())
    plan = ClipPlan(SamplingConfig(4), 10.0, 5.0)
    decoded = video_module.read_clips(path, plan, video_module.VideoBackend.pyav)
    assert decoded.failed == [2, 3]  # 10-20 s and 15-25 s hold frames 30-33
    assert [c.number for c in decoded.clips] == [0, 1, 4, 5, 6]


def search_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["search", *args, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.splitlines()[0]))


def test_search_without_a_checkpoint_returns_videos_with_their_moments(long_dir: Path, tmp_path: Path) -> None:
    """No trained run in the workspace: CLIP's own similarity, one result per video, moments from its clips."""
    from tcmgc_cli.workspace import default_cache_path

    extract(long_dir, default_cache_path("tcmgc-tiny"))
    line = search_json("a yellow square", "--top-k", "5")
    assert line["scorer"] == "clip"
    hits = line["results"]
    assert isinstance(hits, list) and sorted(h["video_id"] for h in hits) == ["short", "walk"]  # one each
    walk = next(h for h in hits if h["video_id"] == "walk")
    spans = FeatureCache(default_cache_path("tcmgc-tiny")).clips("walk")
    assert len(walk["moments"]) == 3 and walk["moments"][0]["score"] == walk["score"]
    assert all(a["score"] >= b["score"] for a, b in zip(walk["moments"], walk["moments"][1:], strict=False))
    assert all(
        (m["start_sec"], m["end_sec"]) in [(round(a, 3), round(b, 3)) for a, b in spans] for m in walk["moments"]
    )
    best = walk["moments"][0]
    assert best["start_sec"] <= walk["start_sec"] < walk["end_sec"] <= best["end_sec"]  # absolute, inside the clip
    assert walk["entry"].startswith("walk@")
    several = search_json("a yellow square", "--top-k", "5", "--per-video", "3")["results"]
    assert isinstance(several, list) and [h["video_id"] for h in several].count("walk") == 3


def test_clip_scorer_equals_open_clips_own_similarity(long_dir: Path, tmp_path: Path) -> None:
    """The independent side: open_clip's encode_text and the cache's frames, cosine with their mean."""
    import open_clip
    import torch

    from tcmgc_cli.model.encoder import load_clip
    from tcmgc_cli.search import open_search

    cache = tmp_path / "c.h5"
    extract(long_dir, cache)
    index = open_search(cache=cache, scorer="clip")
    query = "a blue square moves"
    got = {h.entry: h.score for h in index.search([query], top_k=10, per_video=20)[0][0]}
    model, _ = load_clip("tcmgc-clip-tiny", None)
    tokens = open_clip.get_tokenizer("tcmgc-clip-tiny")([query])
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)[0]
    features = FeatureCache(cache)
    for entry, score in got.items():
        video = torch.nn.functional.normalize(torch.from_numpy(features.embeddings(entry)).mean(0), dim=0)
        assert score == pytest.approx(float(text @ video), abs=2e-3)  # the index keeps frames in float16


def test_clip_scorer_refuses_other_weights(long_dir: Path, tmp_path: Path) -> None:
    import torch

    from tcmgc_cli.model.encoder import load_clip

    cache = tmp_path / "c.h5"
    extract(long_dir, cache)
    model, _ = load_clip("tcmgc-clip-tiny", None)
    with torch.no_grad():
        model.visual.proj.add_(0.1)
    weights = tmp_path / "other.pt"
    torch.save(model.state_dict(), weights)
    result = runner.invoke(
        app, ["search", "a dog", "--cache", str(cache), "--scorer", "clip", "--pretrained", str(weights)]
    )
    assert result.exit_code == 1 and "--pretrained you extracted with" in result.output


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_container_that_misreports_its_duration_is_clipped_by_its_frames(tmp_path: Path, backend: str) -> None:
    """A cut file whose header (at the front: faststart) still says 40 s and 80 frames: the frames that are really
    there decide the clips, never the header."""
    import av

    folder = tmp_path / "v"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)  # incompressible
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264rgb", rate=2)
        stream.width, stream.height, stream.pix_fmt, stream.options = 32, 32, "rgb24", {"crf": "0"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    raw = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(raw[: len(raw) // 2])
    with av.open(str(cut)) as container:  # the header still promises the whole video
        assert container.duration / 1e6 == pytest.approx(40.0) and container.streams.video[0].frames == 80
    cache = tmp_path / "c.h5"
    extract(folder, cache, "--backend", backend)
    spans = FeatureCache(cache).clips("cut")
    assert spans[0][0] == 0.0 and 15.0 <= spans[-1][1] <= 25.0  # about half of the 40 s decodes
    assert all(b - a == pytest.approx(10.0) for a, b in spans)


def test_a_machine_without_decord_decodes_with_pyav(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """decord has no ARM wheels: there the default backend quietly becomes PyAV, with the same frames."""
    from tcmgc_cli.data import video as video_module

    path = long_video(tmp_path / "v.mp4", seconds=4)
    with_decord = video_module.read_video(path, lambda n, fps: [0, n - 1])
    opened: list[str] = []
    real_open = video_module.open_video

    def spy(p: Path, backend: video_module.VideoBackend) -> object:
        opened.append(backend.value)
        return real_open(p, backend)

    monkeypatch.setattr(video_module, "has_decord", lambda: False)
    monkeypatch.setattr(video_module, "open_video", spy)
    without = video_module.read_video(path, lambda n, fps: [0, n - 1])
    assert opened == ["pyav"] and np.array_equal(without[0], with_decord[0])


class _NoRateStream:
    """A PyAV stream that reports no frame rate (average_rate None), everything else as it is."""

    average_rate = None

    def __init__(self, stream: object) -> None:
        self.stream = stream

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


class _NoRateContainer:
    def __init__(self, container: Any) -> None:
        self.container = container
        self.streams = SimpleNamespace(video=[_NoRateStream(container.streams.video[0])])

    def __enter__(self) -> "_NoRateContainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def demux(self, stream: _NoRateStream) -> Any:
        return self.container.demux(stream.stream)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_stream_that_reports_zero_fps_is_read_by_its_timestamps(
    long_dir: Path, tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same clips, frames and embeddings as with its real rate, for whole-video sampling at 1 fps and for clips."""
    import av
    import decord

    args = ("--backend", backend, "--store-frames", "--sampling", "fps", "--padding", "zero")
    extract(long_dir, tmp_path / "rate.h5", *args)
    if backend == "decord":
        monkeypatch.setattr(decord.VideoReader, "get_avg_fps", lambda self: 0.0)
    else:
        real_open = av.open
        monkeypatch.setattr(av, "open", lambda *a, **k: _NoRateContainer(real_open(*a, **k)))
    extract(long_dir, tmp_path / "zero.h5", *args)
    rate, zero = FeatureCache(tmp_path / "rate.h5"), FeatureCache(tmp_path / "zero.h5")
    assert zero.ids() == rate.ids() and len(zero.clips("walk")) == 7
    for video in ("short", "walk"):
        assert zero.clips(video) == rate.clips(video)
    for entry in rate.ids():
        np.testing.assert_array_equal(zero.frames(entry), rate.frames(entry))
        np.testing.assert_array_equal(zero.embeddings(entry), rate.embeddings(entry))
