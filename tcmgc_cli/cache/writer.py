"""Writing a cache: one atomic segment per batch of tracks, and tiered merges of segments.

Growth is log-structured: when FANOUT consecutive segments are of the same size class, they are rewritten as one, so
adding K videos to a cache of N writes O(K log N) data, never the whole cache. A merged segment names the segments it
replaces, and readers skip those even if deleting them was interrupted: a SIGKILL at any moment leaves only whole
files.
"""

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcmgc_cli.cache.reader import FeatureCache
from tcmgc_cli.cache.segments import (
    STR,
    VIDEO_COLUMNS,
    CacheSettings,
    Segment,
    Track,
    atomic_h5,
    column,
    frame_shapes,
    resolve,
    segment_key,
    write_attrs,
    write_table,
    write_tracks,
)
from tcmgc_cli.errors import BusyError, CacheError
from tcmgc_cli.fileio import FolderLock, describe_os_error, stale_temp, write_text_atomic
from tcmgc_cli.workspace import cache_folder

FANOUT = 8  # segments of one size class that merge into one
TIER_FRAMES = 4096  # segments under this many frames are the smallest size class
IN_MEMORY_BYTES = 256 << 20  # files up to this size are built in memory, then written with plain file writes


def tier(frames: int) -> int:
    """The size class of a segment of `frames` frames."""
    return 0 if frames < TIER_FRAMES else int(math.log(frames / TIER_FRAMES, FANOUT)) + 1


class CacheWriter:
    """Adds tracks to a cache, one atomic segment per `add`, and merges segments in tiers. One writer per cache (or
    per shard) at a time.

    padding: (D,) the padding feature, needed to create a new cache. shard: the rank of a distributed extract; each
    rank writes its own segments under its own lock, and the cache stays one logical cache that every reader sees.
    """

    def __init__(
        self, path: str | os.PathLike[str], settings: CacheSettings, shard: int | None = None,
        padding: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.settings = settings
        self.shard = shard
        self.folder = cache_folder(self.path)
        busy = f"{self.path} is being written by another tcmgc process: wait for it to finish."
        try:
            self._lock = FolderLock(self.folder, busy, "lock" if shard is None else f"lock-r{shard}")
        except BusyError as err:
            raise CacheError(str(err)) from None
        except OSError as err:
            raise CacheError(f"cannot write the cache: {describe_os_error(err, self.folder)}") from err
        for stale in [*self.folder.glob(".tmp-*"), *self.path.parent.glob(f".tmp-{self.path.name}-*")]:
            if stale_temp(stale.name):  # left by a killed writer
                stale.unlink(missing_ok=True)
        self._check_or_create_root(padding)
        self.dim = len(FeatureCache(self.path).padding_feature)
        if shard is None:
            self._drop_replaced()

    def _check_or_create_root(self, padding: np.ndarray | None) -> None:
        if not self.path.exists():
            if padding is None:
                raise CacheError(f"no cache at {self.path}: create it with `tcmgc extract` first.")
            with atomic_h5(self.path) as f:
                write_attrs(f, self.settings)
                f.create_dataset("padding_feature", data=np.asarray(padding, dtype=np.float32))
            return
        existing = FeatureCache(self.path)
        try:
            problem = existing.settings.mismatch(self.settings)
        finally:
            existing.close()
        if problem:
            raise CacheError(
                f"{self.path} was built with other settings ({problem}). "
                "Pass --cache NEW.h5 for a new cache, or delete this one to rebuild it."
            )

    def _drop_replaced(self) -> None:
        """Delete segments that a merge replaced but a killed writer did not get to delete."""
        cache = FeatureCache(self.path)
        try:
            live = {p.name for p in cache.segments()}
        finally:
            cache.close()
        for p in sorted(self.folder.glob("seg-*.h5"), key=segment_key):
            if p.name not in live:
                p.unlink(missing_ok=True)

    def add(self, tracks: Sequence[Track], removed: Sequence[str] = ()) -> Path:
        """Write `tracks` (and deletions of older videos) as one new segment, atomically."""
        for t in tracks:
            _check_track(t, self.dim, self.settings.store_frames)
        stem = f"seg-{time.time_ns():020d}-{os.getpid()}"
        target = self.folder / f"{stem}-00.h5"
        with atomic_h5(target) as f:
            write_attrs(f, self.settings, frames=sum(len(t.times) for t in tracks))
            write_tracks(f, tracks, removed, self.settings, self.dim, stem)
        return target

    def compact(self, full: bool = False) -> int:
        """Merge runs of FANOUT consecutive segments of one size class (all segments into one with `full`); returns
        the number of segments merged away."""
        merged = 0
        while True:
            cache = FeatureCache(self.path)
            try:
                run = _mergeable(cache, full)
                if not run:
                    return merged
                self._merge(cache, run)
            finally:
                cache.close()
            for seg in run:  # oldest first; the new segment names them, so a crash here resurrects nothing
                seg.unlink(missing_ok=True)
            merged += len(run) - 1

    def _merge(self, cache: FeatureCache, run: list[Path]) -> Path:
        """Write the live tracks of consecutive segments `run` as one segment that sorts where the last one did."""
        all_segments = cache.segment_tables()
        first = next(i for i, s in enumerate(all_segments) if s.path == run[0])
        segments = all_segments[first : first + len(run)]
        live = resolve(segments)
        removed = sorted({v for s in segments for v in s.removed}) if first > 0 else []
        stamp, pid, _ = segment_key(run[-1])
        target = self.folder / f"seg-{stamp:020d}-{pid}-{max(segment_key(p)[2] for p in run) + 1:02d}.h5"
        frames = sum(int(segments[p].table["counts"][r]) for p, r in live.values())
        row_bytes = self.dim * 4 + 16 + (3 * self.settings.image_size**2 if self.settings.store_frames else 0)
        small = frames * row_bytes < IN_MEMORY_BYTES
        if not small:
            _check_space(target, run)
        with atomic_h5(target, in_memory=small) as f:
            write_attrs(f, self.settings, frames=frames, replaces=[p.name for p in run])
            columns = frame_shapes(self.dim, self.settings.image_size, self.settings.store_frames)
            _copy_tracks(cache, segments, live, removed, f, columns)
        return target

    def write_failures(self, failures: dict[str, dict[str, str]]) -> None:
        """This writer's failures; a single writer also drops the records that shards of an earlier run left."""
        path = self.folder / ("failures.json" if self.shard is None else f"failures-r{self.shard}.json")
        if self.shard is None:
            for old in self.folder.glob("failures-r*.json"):
                old.unlink()
        write_text_atomic(path, json.dumps(failures, indent=1, ensure_ascii=False))

    def close(self) -> None:
        self._lock.close()


def _check_track(t: Track, dim: int, store_frames: bool) -> None:
    n = len(t.times)
    if n < 1 or t.features.shape != (n, dim) or len(t.frame_indices) != n:
        raise CacheError(
            f"track of {t.video_id!r}: {n} times, features of shape {tuple(t.features.shape)} and "
            f"{len(t.frame_indices)} frame numbers; the cache wants n >= 1 times and features (n, {dim})."
        )
    if np.any(np.diff(t.times) < 0) or not np.isfinite(t.times).all():
        raise CacheError(f"track of {t.video_id!r}: its times must be finite and non-decreasing.")
    if store_frames and (t.pixels is None or len(t.pixels) != n):
        raise CacheError(f"track of {t.video_id!r} has no frames, and this cache keeps them (--store-frames).")


def _mergeable(cache: FeatureCache, full: bool) -> list[Path]:
    """The first run of FANOUT or more consecutive live segments of one size class (or all of them, with full)."""
    segments = cache.segments()
    if full:
        return segments if len(segments) > 1 else []
    tiers = [tier(int(cache.file(p).attrs.get("frames", 0))) for p in segments]
    start = 0
    for i in range(1, len(segments) + 1):
        if i == len(segments) or tiers[i] != tiers[start]:
            if i - start >= FANOUT:
                return segments[start:i]
            start = i
    return []


def _copy_tracks(
    cache: FeatureCache, segments: list[Segment], live: dict[str, tuple[int, int]], removed: list[str],
    f: h5py.File, columns: dict[str, tuple[tuple[int, ...], Any]], block: int = 1 << 16,
) -> None:  # fmt: skip
    """Copy the live videos' rows of `segments` into the empty file `f`: per source, in runs of contiguous frames."""
    order = sorted(live.items(), key=lambda kv: (kv[1][0], int(segments[kv[1][0]].table["offsets"][kv[1][1]])))
    table = {name: np.array([segments[p].table[name][r] for _, (p, r) in order], dtype=object if dtype is STR else dtype)
             for name, dtype in VIDEO_COLUMNS.items()}  # fmt: skip
    counts = table["counts"].astype(np.int64)
    table["offsets"] = np.cumsum(counts) - counts
    write_table(f, table, len(order))
    total = int(counts.sum())
    for name, (shape, dtype) in columns.items():
        column(f, f"frames/{name}", dtype, (total, *shape))
    column(f, "removed", STR, (len(removed),), np.asarray(removed, dtype=object))
    at = 0
    for pos, start, stop in _runs(order, segments):
        src = cache.file(segments[pos].path)
        for a in range(start, stop, block):
            b = min(stop, a + block)
            for name in columns:
                f[f"frames/{name}"][at : at + b - a] = src[f"frames/{name}"][a:b]
            at += b - a


def _runs(order: list[tuple[str, tuple[int, int]]], segments: list[Segment]) -> Iterator[tuple[int, int, int]]:
    """(segment position, first row, stop row) of contiguous frame ranges, in the order of `order`."""
    current: list[int] | None = None
    for video, (pos, _) in order:
        o, n = segments[pos].span(video)
        if current is not None and current[0] == pos and current[2] == o:
            current[2] = o + n
            continue
        if current is not None:
            yield current[0], current[1], current[2]
        current = [pos, o, o + n]
    if current is not None:
        yield current[0], current[1], current[2]


def _check_space(target: Path, sources: list[Path]) -> None:
    """Merging writes a new segment as large as its sources: refuse, before writing, where it cannot fit (the
    sources stay, and readers see the cache whole, merged or not)."""
    need = sum(p.stat().st_size for p in sources if p.exists())
    free = shutil.disk_usage(target.parent).free
    if free < need * 1.05 + (1 << 20):
        raise CacheError(
            f"{target.parent}: not enough free space to merge the cache ({need >> 20} MB needed, {free >> 20} MB free). "
            "Free some disk space and rerun: every extracted video is kept in its segment until then."
        )
