"""Videos become frame tracks, long ones scored as windows: decoding with both backends, the cache's track and entry
API, resume, a changed source, moments in search, bad input."""

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cache.entries import window_starts
from tcmgc_cli.cli import app
from tcmgc_cli.search.moments import windows_of_lengths
from tests.helpers import write_video

runner = CliRunner()
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def long_video(path: Path, seconds: int = 40, fps: int = 2, size: int = 32) -> Path:
    """One solid colour per 10-second stretch (red, green, blue, yellow), so every frame tells its time."""
    frames = np.zeros((seconds * fps, size, size, 3), dtype=np.uint8)
    for n in range(len(frames)):
        frames[n] = COLORS[(n // (10 * fps)) % len(COLORS)]
    return write_video(path, frames, fps=fps)


def test_window_starts_cover_the_track_without_gaps() -> None:
    assert window_starts(8, 12, 6) == [0]  # shorter than a window: one entry
    assert window_starts(100, 0, 0) == [0]  # window 0: whole video
    for count, window, stride in [(40, 10, 5), (37, 10, 5), (61, 15, 7), (30, 10, 10), (31, 10, 10), (600, 12, 6)]:
        starts = window_starts(count, window, stride)
        assert starts[0] == 0 and starts[-1] + window == count  # from the start to the end
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))  # no gaps, stride at most
        assert len(starts) == len(set(starts))
    assert window_starts(40, 10, 5) == [0, 5, 10, 15, 20, 25, 30]
    assert len(window_starts(600, 12, 6)) == 99


def test_candidate_windows_of_several_lengths() -> None:
    got = windows_of_lengths(2, 10, [1, 4, 8, 16])
    assert (2, 3) in got and (9, 10) in got and (2, 10) in got  # every frame alone, and the whole range
    assert all(2 <= a < b <= 10 for a, b in got) and not any(b - a == 16 for a, b in got)
    fours = [w for w in got if w[1] - w[0] == 4]
    assert fours == [(2, 6), (4, 8), (6, 10)]  # every half length, the last one ending at the end


@pytest.fixture
def long_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "long"
    folder.mkdir()
    long_video(folder / "walk.mp4")
    write_video(folder / "short.mp4", np.full((6, 32, 32, 3), 128, dtype=np.uint8), fps=2)  # 3 s
    return folder


def extract(folder: Path, cache: Path, *extra: str) -> dict[str, object]:
    result = runner.invoke(app, ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache", str(cache),
                                 "--workers", "0", "--window-seconds", "10", "--window-stride", "5", "--json", *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_long_video_is_one_track_scored_as_windows(long_dir: Path, tmp_path: Path, backend: str) -> None:
    cache_path = tmp_path / f"{backend}.h5"
    report = extract(long_dir, cache_path, "--backend", backend, "--store-frames")
    assert report["frames"] == 40 + 3 and report["frames_per_video_second"] == 1.0  # each frame encoded once
    cache = FeatureCache(cache_path)
    assert sorted(cache.videos()) == ["short", "walk"]
    times, feats = cache.track("walk")
    assert times.tolist() == [float(k) for k in range(40)] and feats.shape == (40, 32)  # 1 frame per second
    assert cache.windows("short") == [(0.0, 3.0)] and cache.window_ids("short") == ["short"]
    assert cache.entry_inputs(["short"])[0][0].shape == (8, 32)  # a short video is one entry, zero-padded
    assert cache.entry_inputs(["short"])[1].tolist() == [[True] * 3 + [False] * 5]
    spans = cache.windows("walk")
    assert spans == [(5.0 * k, 5.0 * k + 10.0) for k in range(7)]
    ids = cache.window_ids("walk")
    assert ids == [f"walk@{k:04d}" for k in range(7)] and set(ids) <= set(cache.ids())
    pixels = cache.track_pixels("walk")
    for t, frame in zip(times, pixels, strict=True):  # the colour of its 10-second stretch
        want = COLORS[int(t // 10) % len(COLORS)]
        assert np.abs(frame[16, 16].astype(int) - want).max() <= 8, t
    for (start, _), rid in zip(spans, ids, strict=True):  # a window's 10 frames, spread over the model's 8 slots
        rows = [int(start) + i * 9 // 7 for i in range(8)]
        np.testing.assert_array_equal(cache.entry_inputs([rid])[0][0], feats[rows])
        np.testing.assert_array_equal(cache.frames(rid), pixels[rows])


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
    assert cache.windows("walk") == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0)]
    assert not [i for i in cache.ids() if i.startswith("walk@0003")]  # the old version's later windows are gone
    assert len(cache.track("walk")[0]) == 20


def test_bad_clip_options(long_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import SAMPLE_MSRVTT

    base = ["extract", "--model", "tcmgc-tiny", "--cache", str(tmp_path / "c.h5"), "--workers", "0"]
    gaps = runner.invoke(app, [*base, "--videos", str(long_dir), "--window-seconds", "10", "--window-stride", "20"])
    assert gaps.exit_code == 2 and "between windows" in gaps.output
    negative = runner.invoke(app, [*base, "--videos", str(long_dir), "--window-seconds", "-1"])
    assert negative.exit_code == 2 and "at least 0" in negative.output
    dataset = runner.invoke(
        app, [*base, "--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), "--window-seconds", "5"]
    )
    assert dataset.exit_code == 2 and "one entry per video" in dataset.output
    for fps in ("0", "-1"):
        bad = runner.invoke(app, [*base, "--videos", str(long_dir), "--fps", fps])
        assert bad.exit_code == 2 and "--fps must be more than 0" in bad.output
    gone = runner.invoke(app, [*base, "--videos", str(long_dir), "--sampling", "uniform"])
    assert gone.exit_code == 2 and "track of frames at --fps" in gone.output


def test_a_frame_that_fails_to_decode_is_left_out_and_the_others_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tcmgc_cli.data import video as video_module
    from tcmgc_cli.data.sampling import fps_candidates

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
    got = video_module.read_frames(
        path, lambda r: fps_candidates(r.num_frames, r.fps, 1.0), video_module.VideoBackend.pyav
    )
    assert got.dropped == 2 and got.indices == [i for i in range(0, 80, 2) if not 30 <= i <= 33]
    assert 15.0 not in got.times.tolist() and 18.0 in got.times.tolist() and got.duration == 40.0


def search_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["search", *args, "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.splitlines()[0]))


def test_search_without_a_checkpoint_returns_videos_with_their_moments(long_dir: Path, tmp_path: Path) -> None:
    """No trained run in the workspace: CLIP's own similarity, one result per video, moments at the track's
    resolution, each scored as CLIP scores a window: the sentence against the mean of its frames."""
    import torch

    from tcmgc_cli.search import open_search
    from tcmgc_cli.workspace import default_cache_path

    extract(long_dir, default_cache_path("tcmgc-tiny"))
    line = search_json("a yellow square", "--top-k", "5", "--moments", "4")
    assert line["scorer"] == "clip"
    hits = line["results"]
    assert isinstance(hits, list) and sorted(h["video_id"] for h in hits) == ["short", "walk"]  # one each
    walk = next(h for h in hits if h["video_id"] == "walk")
    moments = walk["moments"]
    assert 1 <= len(moments) <= 4
    assert (walk["start_sec"], walk["end_sec"]) == (moments[0]["start_sec"], moments[0]["end_sec"])
    assert all(a["score"] >= b["score"] for a, b in zip(moments, moments[1:], strict=False))
    spans = sorted((m["start_sec"], m["end_sec"]) for m in moments)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # never overlapping
    assert all(s == int(s) and 0 <= s < e <= 40 for s, e in spans)  # whole track frames: seconds at 1 fps
    index = open_search(cache=default_cache_path("tcmgc-tiny"), scorer="clip")
    text, _ = index.encode_queries(["a yellow square"])
    sentence = torch.nn.functional.normalize(text.sentence[0], dim=0)
    _, feats = FeatureCache(default_cache_path("tcmgc-tiny")).track("walk")
    for m in moments:  # the oracle: cosine of the sentence with the mean of the window's frames
        mean = torch.from_numpy(feats[int(m["start_sec"]) : int(m["end_sec"])]).mean(0)
        assert m["score"] == pytest.approx(float(sentence @ torch.nn.functional.normalize(mean, dim=0)), abs=2e-3)
    assert walk["entry"].startswith("walk@")
    several = search_json("a yellow square", "--top-k", "5", "--per-video", "3")["results"]
    assert isinstance(several, list) and [h["video_id"] for h in several].count("walk") == 3
    inside = search_json("a yellow square", "--video", "walk")["results"]
    assert isinstance(inside, list) and [h["video_id"] for h in inside] == ["walk"]


def test_a_planted_moment_is_found_to_the_second(tmp_path: Path) -> None:
    """A 60-second track whose frames 21-24 are the query's own direction and all others random directions: the
    best moment lies inside 21-25 s, found among windows of every length around the best entry."""
    import torch

    from tcmgc_cli.cache import add_tracks
    from tcmgc_cli.search import open_search

    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "seed.mp4", np.zeros((4, 32, 32, 3), np.uint8), fps=2)
    cache = tmp_path / "c.h5"
    extract(folder, cache)
    index = open_search(cache=cache, scorer="clip")
    text, _ = index.encode_queries(["a red circle moves left"])
    t = torch.nn.functional.normalize(text.sentence[0], dim=0).numpy()
    others = np.random.default_rng(0).standard_normal((60, len(t))).astype(np.float32)
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    feats = np.where((np.arange(60)[:, None] >= 21) & (np.arange(60)[:, None] < 25), t, others)
    add_tracks(cache, [("planted", np.arange(60.0), feats, "planted.mp4")])
    index = open_search(cache=cache, scorer="clip")
    hit = index.search(["a red circle moves left"], video="planted")[0][0][0]
    assert 21.0 <= hit.start_sec < hit.end_sec <= 25.0 and hit.end_sec - hit.start_sec >= 2
    top = index.search(["a red circle moves left"], top_k=1)[0][0][0]
    assert top.video_id == "planted" and 21.0 <= top.start_sec < top.end_sec <= 25.0


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
    assert len(got) == 8  # short, and the seven windows of walk
    model, _ = load_clip("tcmgc-clip-tiny", None)
    tokens = open_clip.get_tokenizer("tcmgc-clip-tiny")([query])
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)[0]
    features = FeatureCache(cache)
    for entry, score in got.items():
        real = features.entry_inputs([entry])[1][0]  # the mean of the real frames: zero-padded slots left out
        video = torch.nn.functional.normalize(
            torch.from_numpy(features.entry_inputs([entry])[0][0][real]).mean(0), dim=0
        )
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
    spans = FeatureCache(cache).windows("cut")
    assert spans[0][0] == 0.0 and 15.0 <= spans[-1][1] <= 25.0  # about half of the 40 s decodes
    assert (
        all(b - a == pytest.approx(10.0) for a, b in spans[:-1])
        and 15 <= len(FeatureCache(cache).track("cut")[0]) <= 25
    )


def test_a_machine_without_decord_decodes_with_pyav(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """decord has no ARM wheels: there a run that asks for decord quietly decodes with PyAV, the same frames."""
    from tcmgc_cli.data import video as video_module

    path = long_video(tmp_path / "v.mp4", seconds=4)
    decord = video_module.VideoBackend.decord
    with_decord = video_module.read_video(path, lambda n, fps: [0, n - 1], decord)
    opened: list[str] = []
    real_open = video_module.open_video

    def spy(p: Path, backend: video_module.VideoBackend) -> object:
        opened.append(backend.value)
        return real_open(p, backend)

    monkeypatch.setattr(video_module, "has_decord", lambda: False)
    monkeypatch.setattr(video_module, "open_video", spy)
    without = video_module.read_video(path, lambda n, fps: [0, n - 1], decord)
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
    """Same track, windows, frames and embeddings as with its real rate."""
    import av
    import decord

    args = ("--backend", backend, "--store-frames")
    extract(long_dir, tmp_path / "rate.h5", *args)
    if backend == "decord":
        monkeypatch.setattr(decord.VideoReader, "get_avg_fps", lambda self: 0.0)
    else:
        real_open = av.open
        monkeypatch.setattr(av, "open", lambda *a, **k: _NoRateContainer(real_open(*a, **k)))
    extract(long_dir, tmp_path / "zero.h5", *args)
    rate, zero = FeatureCache(tmp_path / "rate.h5"), FeatureCache(tmp_path / "zero.h5")
    assert zero.ids() == rate.ids() and len(zero.windows("walk")) == 7
    for video in ("short", "walk"):
        assert zero.windows(video) == rate.windows(video)
        np.testing.assert_array_equal(zero.track(video)[0], rate.track(video)[0])
    for entry in rate.ids():
        np.testing.assert_array_equal(zero.frames(entry), rate.frames(entry))
        np.testing.assert_array_equal(zero.entry_inputs([entry])[0][0], rate.entry_inputs([entry])[0][0])


def _tracks(cache: Path) -> dict[str, tuple[np.ndarray, ...]]:
    c = FeatureCache(cache)
    try:
        return {v: (*c.track(v), c._frame_column([v], "indices")[v], c.track_pixels(v)) for v in c.videos()}
    finally:
        c.close()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_long_video_extracts_in_stretches_as_in_one_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workers: str
) -> None:
    """With stretches of 8 frames, sample_data/long's videos (27 to 31 frames at 1 fps) decode as 4 or 5 stretches (the
    first of 4 frames), in this process or in 2 decoder processes: no stretch holds more than 8 decoded frames, and
    every track (times, frame numbers, stored pixels, features) is the one a single pass gives."""
    from tcmgc_cli.extract import decode, pipeline

    videos = Path(__file__).parents[1] / "sample_data" / "long" / "videos"
    args = ["--window-seconds", "0", "--store-frames"]
    whole = extract(videos, tmp_path / "whole.h5", *args)
    sizes: list[tuple[str, int, int]] = []
    add = pipeline._Tracks.add
    monkeypatch.setattr(decode, "STRETCH", 8)

    def spy(self: Any, d: Any) -> None:
        sizes.append((d.job.video_id, d.stretch, len(d.frames)))
        add(self, d)

    monkeypatch.setattr(pipeline._Tracks, "add", spy)
    parts = extract(videos, tmp_path / "parts.h5", *args, "--workers", workers)
    assert whole["extracted"] == parts["extracted"] and len(whole["extracted"]) == 3
    assert [n for v, _, n in sizes if v == "long2"] == [4, 8, 8, 8, 3] and max(n for _, _, n in sizes) == 8
    assert [(k, n) for v, k, n in sizes if v == "long0"] == [(0, 4), (1, 8), (2, 8), (3, 7)]
    a, b = _tracks(tmp_path / "whole.h5"), _tracks(tmp_path / "parts.h5")
    for vid, (times, feats, indices, pixels) in a.items():
        assert np.array_equal(times, b[vid][0]) and np.array_equal(indices, b[vid][2])
        assert np.array_equal(pixels, b[vid][3]) and np.allclose(feats, b[vid][1], atol=1e-6)


def test_a_stretch_neither_decoder_reads_is_left_out_and_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A long video whose later stretches fail in PyAV and then in decord keeps the frames that decoded, says how
    many did not, and the run goes on."""
    from tcmgc_cli.data import readers
    from tcmgc_cli.extract import decode

    def broken(real: Any) -> Any:
        def get_frames(self: Any, indices: list[int], transform: Any = None) -> Any:
            if self.lo > 0:
                raise RuntimeError("damaged")
            return real(self, indices, transform)

        return get_frames

    monkeypatch.setattr(decode, "STRETCH", 8)
    for cls in (readers.PyAVStretch, readers.DecordStretch):
        monkeypatch.setattr(cls, "get_frames", broken(cls.get_frames))
    videos = Path(__file__).parents[1] / "sample_data" / "long" / "videos"
    out = extract(videos, tmp_path / "c.h5", "--window-seconds", "0")
    partial = {p["id"]: p["reason"] for p in out["partial"]}  # type: ignore[union-attr]
    assert sorted(out["extracted"]) == ["long0", "long1", "long2"]  # type: ignore[arg-type]
    assert partial["long2"] == "27 of 31 frames do not decode; the others are kept"
    times, _ = FeatureCache(tmp_path / "c.h5").track("long2")
    assert times.tolist() == [0.0, 1.0, 2.0, 3.0]
