import pickle
from pathlib import Path

import numpy as np
import pytest

from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache, VideoRecord, segment_dir
from tcmgc_cli.errors import CacheError

SETTINGS = CacheSettings("tcmgc-tiny", "clip:abc", {"num_frames": 4, "strategy": "uniform", "fps": 1.0}, 32, False)


def record(vid: str, seed: int, frames: bool = False) -> VideoRecord:
    rng = np.random.default_rng(seed)
    return VideoRecord(
        vid, rng.standard_normal((4, 8)).astype(np.float32), np.arange(4, dtype=np.float32) / 2,
        np.arange(4), 4, f"/videos/{vid}.mp4", 100 + seed, 5 + seed, f"sha{seed}",
        rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8) if frames else None,
    )  # fmt: skip


def test_round_trip_through_segments_and_compaction(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    writer = CacheWriter(path, SETTINGS)
    writer.add([record("a", 1), record("b b é", 2)])
    writer.add([record("c", 3)])
    before = FeatureCache(path)
    assert len(before) == 3 and "b b é" in before and "zz" not in before
    assert writer.compact() == 2
    writer.close()
    assert not list(segment_dir(path).glob("seg-*"))
    cache = FeatureCache(path)
    assert cache.ids() == ["a", "b b é", "c"]
    for vid, seed in (("a", 1), ("b b é", 2), ("c", 3)):
        want = record(vid, seed)
        np.testing.assert_array_equal(cache.embeddings(vid), want.embeddings)
        np.testing.assert_array_equal(before.embeddings(vid), want.embeddings)
        got = cache.record(vid)
        assert (got.path, got.size, got.mtime_ns, got.sha1, got.num_frames) == (
            want.path,
            want.size,
            5 + seed,
            want.sha1,
            4,
        )
    stacked = cache.load_embeddings(["c", "a"])
    assert stacked.shape == (2, 4, 8)
    np.testing.assert_array_equal(stacked[0], record("c", 3).embeddings)


def test_newest_segment_wins_and_frames_round_trip(tmp_path: Path) -> None:
    settings = CacheSettings(**{**SETTINGS.__dict__, "store_frames": True})
    path = tmp_path / "f.h5"
    writer = CacheWriter(path, settings)
    writer.add([record("a", 1, frames=True)])
    writer.add([record("a", 9, frames=True)])
    np.testing.assert_array_equal(FeatureCache(path).embeddings("a"), record("a", 9).embeddings)
    writer.compact()
    writer.close()
    cache = FeatureCache(path)
    np.testing.assert_array_equal(cache.frames("a"), record("a", 9, frames=True).frames)


def test_other_encoder_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    CacheWriter(path, SETTINGS).close()
    other = CacheSettings(**{**SETTINGS.__dict__, "encoder_fingerprint": "clip:def"})
    with pytest.raises(CacheError, match="encoder_fingerprint.*--cache"):
        CacheWriter(path, other)
    resampled = CacheSettings(**{**SETTINGS.__dict__, "sampling": {"num_frames": 8, "strategy": "uniform", "fps": 1.0}})
    with pytest.raises(CacheError, match="sampling"):
        CacheWriter(path, resampled)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    first = CacheWriter(path, SETTINGS)
    with pytest.raises(CacheError, match="another tcmgc process"):
        CacheWriter(path, SETTINGS)
    first.close()
    CacheWriter(path, SETTINGS).close()


def test_crash_between_compaction_and_segment_removal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new root records which segments it merged: leftovers are skipped, and newer data is never shadowed."""
    path = tmp_path / "c.h5"
    writer = CacheWriter(path, SETTINGS)
    writer.add([record("a", 1)])
    writer.add([record("a", 2)])
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # "killed" before any segment is deleted
    writer.compact()
    monkeypatch.undo()
    writer.close()
    assert len(list(segment_dir(path).glob("seg-*"))) == 2
    cache = FeatureCache(path)
    assert cache.segments(exclude=set()) and len(cache) == 1
    np.testing.assert_array_equal(cache.embeddings("a"), record("a", 2).embeddings)


def test_pickles_without_handles_and_missing_file_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    writer = CacheWriter(path, SETTINGS)
    writer.add([record("a", 1)])
    writer.close()
    cache = FeatureCache(path)
    _ = cache.embeddings("a")
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.embeddings("a"), cache.embeddings("a"))
    with pytest.raises(CacheError, match="tcmgc extract"):
        FeatureCache(tmp_path / "nope.h5")


def test_corrupt_root_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(CacheError, match="not a readable HDF5 cache"):
        len(FeatureCache(path))
