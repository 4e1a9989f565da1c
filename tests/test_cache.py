"""The cache of frame tracks: round trips, the entries derived from tracks (against a loop oracle), tiered merges,
deletions, crashes between a merge and its clean-up, add_tracks, and the one-line errors."""

import json
import math
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache, Track, add_tracks
from tcmgc_cli.cache import writer as cache_writer
from tcmgc_cli.config import TrackConfig
from tcmgc_cli.errors import CacheError, ConfigError
from tcmgc_cli.workspace import cache_folder as segment_dir

DIM = 8
WHOLE = CacheSettings("tcmgc-tiny", "clip:abc", 6, TrackConfig(1.0, 4).to_dict())
WINDOWS = CacheSettings("tcmgc-tiny", "clip:abc", 6, TrackConfig(1.0, 4, window=4, stride=2).to_dict())
PAD = np.full(DIM, -7.0, np.float32)


def track(vid: str, seed: int, n: int = 4, pixels: bool = False) -> Track:
    rng = np.random.default_rng(seed)
    return Track(
        vid, np.arange(n, dtype=np.float64), rng.standard_normal((n, DIM)).astype(np.float32), np.arange(n) * 4,
        n + 0.5, f"/videos/{vid}.mp4", 100 + seed, 5 + seed, f"sha{seed}",
        rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8) if pixels else None,
    )  # fmt: skip


def writer(path: Path, settings: CacheSettings = WHOLE) -> CacheWriter:
    return CacheWriter(path, settings, padding=PAD)


def oracle_entry(feats: np.ndarray, t: int, padding: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """The method doc, section 2, as a loop: more than t frames -> t at floor(linspace); fewer -> all, then pad."""
    n = len(feats)
    if n > t:
        picks = [math.floor(i * (n - 1) / (t - 1)) for i in range(t)]
        return feats[picks], np.ones(t, bool)
    out = [feats[i] for i in range(n)] + [PAD] * (t - n)
    return np.stack(out), np.array([True] * n + [False] * (t - n))


def test_tracks_round_trip_and_whole_video_entries_follow_the_method_doc(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    w = writer(path)
    w.add([track("a", 1, n=2), track("b b é", 2, n=9)])
    w.add([track("c", 3, n=4)])
    w.close()
    cache = FeatureCache(path)
    assert cache.videos() == ["a", "b b é", "c"] and cache.ids() == ["a", "b b é", "c"]
    assert "b b é" in cache and "zz" not in cache and len(cache) == 3
    for vid, seed, n in (("a", 1, 2), ("b b é", 2, 9), ("c", 3, 4)):
        times, feats = cache.track(vid)
        np.testing.assert_array_equal(feats, track(vid, seed, n).features)
        np.testing.assert_array_equal(times, np.arange(n))
        want, mask = oracle_entry(feats, 4)
        got, got_mask = cache.entry_inputs([vid])
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_array_equal(got_mask[0], mask)
        assert cache.windows(vid) == [(0.0, n + 0.5)]
    assert cache.source_stamps()["c"] == (103, 8, "sha3")
    stacked, masks = cache.entry_inputs(["c", "a"])
    assert stacked.shape == (2, 4, DIM) and masks.tolist()[1] == [True, True, False, False]


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 10])
def test_windows_cover_the_track_and_match_a_loop(tmp_path: Path, n: int) -> None:
    path = tmp_path / "w.h5"
    w = writer(path, WINDOWS)
    w.add([track("v", 7, n=n)])
    w.close()
    cache = FeatureCache(path)
    _, feats = cache.track("v")
    starts = [0] if n <= 4 else [*range(0, n - 4, 2), n - 4]  # windows of 4 every 2, the last one at the end
    ids = cache.window_ids("v")
    assert ids == (["v"] if n <= 4 else [f"v@{k:04d}" for k in range(len(starts))])
    for vid, s in zip(ids, starts, strict=True):
        want, mask = oracle_entry(feats[s : s + 4], 4)
        got, got_mask = cache.entry_inputs([vid])
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_array_equal(got_mask[0], mask)
    spans = cache.windows("v")
    assert spans[0][0] == 0.0 and spans[-1][1] == n + 0.5  # from the start to the video's end, no gaps
    assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:], strict=False))
    np.testing.assert_array_equal(cache.entry_inputs(["v"])[0][0], oracle_entry(feats, 4)[0])  # a video read whole


def test_newest_segment_wins_and_pixels_round_trip(tmp_path: Path) -> None:
    settings = CacheSettings(**{**WHOLE.__dict__, "store_frames": True})
    path = tmp_path / "f.h5"
    w = writer(path, settings)
    w.add([track("a", 1, pixels=True)])
    w.add([track("a", 9, n=2, pixels=True)])
    assert w.compact(full=True) == 1
    w.close()
    cache = FeatureCache(path)
    assert len(cache.segments()) == 1 and cache.num_frames_of("a") == 2
    np.testing.assert_array_equal(cache.track("a")[1], track("a", 9, n=2).features)
    frames = cache.frames("a")  # (T, S, S, 3): the track's two frames, then zeros
    np.testing.assert_array_equal(frames[:2], track("a", 9, n=2, pixels=True).pixels)
    assert not frames[2:].any()


def test_merges_come_in_tiers_and_leave_the_same_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_writer, "FANOUT", 3)
    monkeypatch.setattr(cache_writer, "TIER_FRAMES", 8)
    path = tmp_path / "t.h5"
    w = writer(path)
    for k in range(9):  # 9 small segments of 4 frames: three merges into 3 segments of 12 frames, then one of 36
        w.add([track(f"v{k}", k)])
        w.compact()
    sizes = [int(h5py.File(p, "r").attrs["frames"]) for p in FeatureCache(path).segments()]
    assert sizes == [36]
    w.add([track("v9", 9)])
    assert w.compact() == 0  # one new small segment merges with nothing: adding costs what it adds
    w.close()
    cache = FeatureCache(path)
    assert cache.videos() == [f"v{k}" for k in range(10)]
    for k in range(10):
        np.testing.assert_array_equal(cache.track(f"v{k}")[1], track(f"v{k}", k).features)


def test_removed_videos_stay_removed_through_merges(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    w = writer(path)
    w.add([track("a", 1), track("b", 2)])
    w.add([track("c", 3)], removed=["a"])
    assert FeatureCache(path).videos() == ["b", "c"]
    w.add([track("a", 4)])  # back, new content
    w.compact(full=True)
    w.close()
    cache = FeatureCache(path)
    assert cache.videos() == ["b", "c", "a"]
    np.testing.assert_array_equal(cache.track("a")[1], track("a", 4).features)


def test_crash_between_merge_and_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The merged segment names the ones it replaces: leftovers are skipped, then deleted by the next writer."""
    path = tmp_path / "c.h5"
    w = writer(path)
    w.add([track("a", 1)])
    w.add([track("a", 2)])
    w.add([track("b", 3)], removed=["a"])
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # "killed" before any is deleted
    w.compact(full=True)
    monkeypatch.undo()
    w.close()
    assert len(list(segment_dir(path).glob("seg-*"))) == 4
    cache = FeatureCache(path)
    assert len(cache.segments()) == 1 and cache.videos() == ["b"]
    writer(path).close()
    assert len(list(segment_dir(path).glob("seg-*"))) == 1


def test_add_tracks_from_python(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    writer(path, WINDOWS).close()
    source = tmp_path / "walk.mp4"
    source.write_bytes(b"x" * 10)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((10, DIM)).astype(np.float32)
    assert add_tracks(path, [("walk", np.arange(10.0), feats, source), ("other", [0.0], feats[:1], "gone.mp4")]) == 2
    cache = FeatureCache(path)
    times, got = cache.track("walk")
    np.testing.assert_array_equal(got, feats)
    assert cache.window_ids("walk") == [f"walk@{k:04d}" for k in range(4)] and cache.video_path("walk") == str(source)
    assert cache.source_stamps()["walk"][0] == 10 and cache.duration("walk") == 10.0
    with pytest.raises(CacheError, match=r"features \(n, 8\)"):
        add_tracks(path, [("bad", np.arange(3.0), feats[:3, :4], "x.mp4")])
    with pytest.raises(CacheError, match="non-decreasing"):
        add_tracks(path, [("bad", [2.0, 1.0], feats[:2], "x.mp4")])
    with pytest.raises(CacheError, match="tcmgc extract"):
        add_tracks(tmp_path / "none.h5", [])


def test_other_settings_are_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    writer(path).close()
    other = CacheSettings(**{**WHOLE.__dict__, "encoder_fingerprint": "clip:def"})
    with pytest.raises(CacheError, match="encoder_fingerprint.*--cache"):
        CacheWriter(path, other)
    with pytest.raises(CacheError, match="track"):
        CacheWriter(path, WINDOWS)


def test_the_earlier_layout_names_the_command_that_rebuilds_it(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs["schema_version"] = 1
        f.attrs["settings"] = json.dumps({"encoder": "tcmgc-b32"})
        f.create_dataset("ids", data=["v"])
    with pytest.raises(CacheError, match=r"earlier cache layout.*tcmgc extract --model tcmgc-b32"):
        len(FeatureCache(path))


def test_bad_track_settings() -> None:
    with pytest.raises(ConfigError, match="--fps must be more than 0"):
        TrackConfig(0.0)
    with pytest.raises(ConfigError, match="--fps must be more than 0"):
        TrackConfig.from_seconds(-1.0, 12, None, None)
    with pytest.raises(ConfigError, match="between windows"):
        TrackConfig.from_seconds(1.0, 12, 10, 20)
    rule = TrackConfig.from_seconds(2.0, 12, None, None)  # default windows: the model's 12 frames, every 6
    assert (rule.window, rule.step) == (12, 6)
    assert TrackConfig.from_seconds(1.0, 12, 0, None).window == 0


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    first = writer(path)
    with pytest.raises(CacheError, match="another tcmgc process"):
        writer(path)
    first.close()
    writer(path).close()


def test_pickles_without_handles_and_missing_file_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    w = writer(path)
    w.add([track("a", 1)])
    w.close()
    cache = FeatureCache(path)
    _ = cache.entry_inputs(["a"])[0][0]
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.entry_inputs(["a"])[0][0], cache.entry_inputs(["a"])[0][0])
    with pytest.raises(CacheError, match="tcmgc extract"):
        FeatureCache(tmp_path / "nope.h5")


def test_corrupt_root_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(CacheError, match="not a readable HDF5 cache"):
        len(FeatureCache(path))
