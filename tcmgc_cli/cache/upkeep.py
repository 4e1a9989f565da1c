"""Upkeep of an existing cache: tracks computed elsewhere, videos removed, what the last extract could not read."""

import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tcmgc_cli.cache.reader import FeatureCache
from tcmgc_cli.cache.segments import CacheSettings, Track
from tcmgc_cli.cache.writer import CacheWriter
from tcmgc_cli.workspace import cache_folder


def existing_settings(path: Path) -> CacheSettings | None:
    """The settings of the cache at `path`, or None where there is none yet."""
    if not path.exists():
        return None
    cache = FeatureCache(path)
    try:
        return cache.settings
    finally:
        cache.close()


def add_tracks(
    path: str | os.PathLike[str], tracks: Iterable[tuple[str, np.ndarray, np.ndarray, str | os.PathLike[str]]],
    batch: int = 4096,
) -> int:  # fmt: skip
    """Add precomputed frame tracks, each (video_id, times (n,), features (n, D), source_path), to a cache that
    `tcmgc extract` created; its settings apply (features must come from its encoder, at its --fps). Written as
    extraction writes, one atomic segment per `batch` tracks, then merged in tiers. A video already in the cache is
    replaced. The source file's size and mtime are recorded when it exists (its sha1 is not computed). Returns the
    number of tracks added.

        add_tracks("tcmgc-workspace/cache/tcmgc-tiny.h5", [("walk", times, features, "walk.mp4")])
    """
    cache = FeatureCache(path)  # a missing cache is an error that names the fix
    try:
        settings = cache.settings
    finally:
        cache.close()
    writer = CacheWriter(path, settings)
    added = 0
    try:
        items = iter(tracks)
        while chunk := [_as_track(item, settings.tracks.fps) for item in itertools.islice(items, batch)]:
            writer.add(chunk)
            added += len(chunk)
        writer.compact()
    finally:
        writer.close()
    return added


def _as_track(item: tuple[str, np.ndarray, np.ndarray, str | os.PathLike[str]], fps: float) -> Track:
    video_id, times, features, source = item
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    features = np.asarray(features, dtype=np.float32)
    source_path = Path(source)
    stat = source_path.stat() if source_path.is_file() else None
    duration = float(times[-1]) + 1.0 / fps if len(times) else 0.0
    return Track(str(video_id), times, features, np.full(len(times), -1, np.int64), duration,
                 str(source_path.resolve()) if stat else str(source), stat.st_size if stat else 0,
                 stat.st_mtime_ns if stat else 0)  # fmt: skip


def remove_videos(cache_path: Path, videos: list[str]) -> list[str]:
    """Delete videos from a cache (one atomic segment that removes them); returns those that were there."""
    cache = FeatureCache(cache_path)
    try:
        known = set(cache.videos())
        settings, there = cache.settings, [v for v in videos if v in known]
    finally:
        cache.close()
    if there:
        writer = CacheWriter(cache_path, settings)
        try:
            writer.add([], removed=there)
            writer.compact()
        finally:
            writer.close()
    return there


def failures_file(path: str | os.PathLike[str]) -> Path:
    """Where an extract records the videos it could not read."""
    return cache_folder(Path(path)) / "failures.json"


def read_failures(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The failures recorded by the last extract into this cache: {video_id: {"path", "reason"}}."""
    merged: dict[str, dict[str, str]] = {}
    for record in sorted(cache_folder(Path(path)).glob("failures*.json")):
        merged.update(json.loads(record.read_text()))
    return merged
