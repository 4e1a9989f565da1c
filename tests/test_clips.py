"""Long videos become overlapping clips: planning, decoding both backends, the cache's clip API, resume, bad input."""

import json
import os
from pathlib import Path

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
    for duration, window, stride in [(40.0, 10.0, 5.0), (37.3, 10.0, 5.0), (61.0, 15.0, 7.5), (30.0, 10.0, 10.0)]:
        spans = clip_spans(duration, window, stride)
        assert spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(duration)
        assert all(b - a == pytest.approx(window) for a, b in spans)
        assert all(nxt[0] <= cur[1] for cur, nxt in zip(spans, spans[1:], strict=False))  # no gaps
        assert all(nxt[0] - cur[0] <= stride + 1e-9 for cur, nxt in zip(spans, spans[1:], strict=False))
    assert len(clip_spans(40.0, 10.0, 5.0)) == 7


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
