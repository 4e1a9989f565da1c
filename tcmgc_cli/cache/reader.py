"""Reading a cache: its live videos' tracks, and the entries derived from them (`entries.py`).

Readers open files lazily, read-only and without HDF5 file locking, and drop their handles when pickled, so that
DataLoader workers reopen them. Segments that a merge replaced are skipped even when deleting them was interrupted.
"""

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcmgc_cli.cache.entries import Entry, gather, layout, span_of, video_entries
from tcmgc_cli.cache.segments import (
    CacheSettings,
    Segment,
    check_finite,
    damaged_message,
    is_segment,
    read_segment,
    read_settings,
    resolve,
    segment_key,
)
from tcmgc_cli.errors import CacheError
from tcmgc_cli.workspace import cache_folder


class FeatureCache:
    """Read access to a cache of frame tracks and the entries derived from them.

    Videos: `videos()`, `track(video)` -> (times (n,), features (n, D)), `tracks(videos)`, `track_pixels(video)`.
    Entries (what the model scores): `len()`, `ids()`, `entries(ids)`, `window_ids(video)`, `windows(video)` (their
    spans in seconds), `entry_inputs(ids)` -> features (N, T, D) and the mask of real frames (N, T). `in` takes
    entry and video ids.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"no cache at {self.path}: run `tcmgc extract` first, or pass --cache FILE.")
        self._handles: dict[Path, h5py.File] = {}
        self._settings: CacheSettings | None = None
        self._padding: np.ndarray | None = None
        self._segments: list[Segment] | None = None
        self._live: dict[str, tuple[int, int]] = {}
        self._entries: list[Entry] | None = None
        self._entry_of: dict[str, int] = {}
        self._entries_of: dict[str, list[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def file(self, path: Path) -> h5py.File:
        """An open, read-only handle of one of the cache's files."""
        if path not in self._handles:
            try:
                self._handles[path] = h5py.File(path, "r", locking=False)
            except OSError as err:
                raise CacheError(f"{path} is not a readable HDF5 cache ({err}): move it away and re-extract.") from err
        return self._handles[path]

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles = {}

    # -- settings and segments --
    @property
    def settings(self) -> CacheSettings:
        if self._settings is None:
            root = self.file(self.path)
            self._settings = read_settings(root, self.path)
            self._padding = np.asarray(root["padding_feature"], dtype=np.float32)
        return self._settings

    @property
    def padding_feature(self) -> np.ndarray:
        """(D,) the image tower's output for an all-zero normalized frame: what a zero-padded slot holds."""
        _ = self.settings
        assert self._padding is not None
        return self._padding

    def segments(self) -> list[Path]:
        """The live segment files, oldest first (those a merge replaced are left out even when still on disk)."""
        folder = cache_folder(self.path)
        if not folder.is_dir():
            return []
        found = sorted((p for p in folder.glob("seg-*.h5") if is_segment(p)), key=segment_key)
        replaced: set[str] = set()
        for p in found:
            replaced.update(json.loads(self.file(p).attrs.get("replaces", "[]")))
        return [p for p in found if p.name not in replaced]

    def segment_tables(self) -> list[Segment]:
        """The live segments' per-video tables, read once."""
        if self._segments is None:
            settings = self.settings
            segments = []
            for path in self.segments():
                f = self.file(path)
                if (theirs := read_settings(f, path)) != settings:
                    raise CacheError(f"segment {path} was written with other settings ({theirs.mismatch(settings)}).")
                segments.append(read_segment(f, path))
            self._segments, self._live = segments, resolve(segments)
        return self._segments

    def _video(self, video_id: str) -> tuple[Segment, int]:
        segments = self.segment_tables()
        if video_id not in self._live:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        pos, row = self._live[video_id]
        return segments[pos], row

    def _value(self, video_id: str, name: str) -> Any:
        seg, row = self._video(video_id)
        return seg.table[name][row]

    def live_by_segment(self) -> list[tuple[Path, list[str]]]:
        """Each live segment with its live videos (in the segment's order): what a search index part covers."""
        segments = self.segment_tables()
        mine: list[list[tuple[int, str]]] = [[] for _ in segments]
        for video, (pos, row) in self._live.items():
            mine[pos].append((row, video))
        return [(seg.path, [v for _, v in sorted(rows)]) for seg, rows in zip(segments, mine, strict=True)]

    # -- videos --
    def videos(self) -> list[str]:
        """The source videos, each once, in the order they were extracted."""
        self.segment_tables()
        return list(self._live)

    def location(self, video_id: str) -> tuple[int, int, int]:
        """Where a video's track is: (position of its segment in `segment_tables()`, first frame row there, frames)."""
        seg, row = self._video(video_id)
        return self._live[video_id][0], int(seg.table["offsets"][row]), int(seg.table["counts"][row])

    def times(self, videos: Sequence[str]) -> dict[str, np.ndarray]:
        """The frame start seconds (n,) of many videos' tracks."""
        return self._frame_column(videos, "times")

    def uid(self, video_id: str) -> str:
        """The uid of a video's track: it changes when the video is extracted again, never otherwise."""
        return str(self._value(video_id, "uids"))

    def num_frames_of(self, video_id: str) -> int:
        """Frames in a video's track."""
        return int(self._value(video_id, "counts"))

    def duration(self, video_id: str) -> float:
        return float(self._value(video_id, "durations"))

    def video_path(self, video_id: str) -> str:
        return str(self._value(video_id, "paths"))

    def source_stamps(self) -> dict[str, tuple[int, int, str]]:
        """(size, mtime_ns, sha1) of every cached video's source file, for skipping unchanged videos."""
        segments = self.segment_tables()
        return {v: (int(segments[p].table["sizes"][r]), int(segments[p].table["mtimes"][r]),
                    str(segments[p].table["sha1"][r])) for v, (p, r) in self._live.items()}  # fmt: skip

    def track(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A video's frame track: times (n,) float64 seconds and features (n, D) float32."""
        return self.tracks([video_id])[video_id]

    def tracks(self, videos: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The tracks of many videos, read in bulk: video -> (times (n,), features (n, D) float32); damaged or
        non-finite ones are a CacheError that names them."""
        feats = self._frame_column(videos, "features")
        times = self._frame_column(videos, "times")
        for video, f in feats.items():
            check_finite(self.path, [video], f[None])
        return {v: (times[v], feats[v]) for v in feats}

    def track_pixels(self, video_id: str) -> np.ndarray:
        """A video's track as preprocessed frames (n, S, S, 3) uint8; needs a cache extracted with --store-frames."""
        if not self.settings.store_frames:
            raise CacheError(f"{self.path} holds no frames: re-extract with --store-frames into a new --cache.")
        return self._frame_column([video_id], "pixels")[video_id]

    def _frame_column(self, videos: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """One frame column of many videos, grouped per segment (a large share of a segment in one read)."""
        segments = self.segment_tables()
        by_seg: dict[int, list[str]] = {}
        for video in dict.fromkeys(videos):
            if video not in self._live:
                raise KeyError(f"video {video!r} is not in cache {self.path}")
            by_seg.setdefault(self._live[video][0], []).append(video)
        out: dict[str, np.ndarray] = {}
        for pos, vids in by_seg.items():
            out.update(self._read_rows(segments[pos], vids, name))
        return out

    def _read_rows(self, seg: Segment, videos: list[str], name: str) -> dict[str, np.ndarray]:
        ds = self.file(seg.path)[f"frames/{name}"]
        spans = [seg.span(v) for v in videos]
        whole = None
        if sum(n for _, n in spans) * 4 >= len(ds):  # a large share: one sequential read
            with contextlib.suppress(OSError):  # a damaged chunk we may not need: read only ours below
                whole = ds[:]
        out, bad = {}, []
        for v, (o, n) in zip(videos, spans, strict=True):
            try:
                out[v] = whole[o : o + n] if whole is not None else ds[o : o + n]
            except OSError as err:  # HDF5's checksum, or a damaged chunk
                bad.append((v, str(err).splitlines()[0]))
        if bad:
            raise CacheError(damaged_message(self.path, [v for v, _ in bad], f"{name}: {bad[0][1]}"))
        return out

    def verify(self, videos: Sequence[str] | None = None) -> dict[str, str]:
        """{video_id: reason} for every cached video (or only `videos`) whose track is damaged or not finite."""
        known = set(self.videos())
        videos = list(known) if videos is None else [v for v in videos if v in known]
        damaged: dict[str, str] = {}
        for video in videos:
            try:
                self.tracks([video])
            except CacheError as err:
                damaged[video] = str(err)
        return damaged

    # -- entries --
    def _entry_table(self) -> list[Entry]:
        if self._entries is None:
            segments = self.segment_tables()
            rule = self.settings.tracks
            entries: list[Entry] = []
            for video, (pos, row) in self._live.items():
                entries.extend(video_entries(video, int(segments[pos].table["counts"][row]), rule))
            self._entries = entries
            self._entry_of = {e.id: i for i, e in enumerate(entries)}
            self._entries_of = {}
            for i, e in enumerate(entries):
                self._entries_of.setdefault(e.video, []).append(i)
        return self._entries

    def entries(self, ids: Sequence[str] | None = None) -> list[Entry]:
        """Every entry, or those of the given ids (an entry id, or a video id: the whole video as one entry)."""
        table = self._entry_table()
        return list(table) if ids is None else [self.entry(i) for i in ids]

    def entry(self, entry_id: str) -> Entry:
        table = self._entry_table()
        if entry_id in self._entry_of:
            return table[self._entry_of[entry_id]]
        if entry_id in self._live:  # a video cut into windows, read whole
            return Entry(entry_id, entry_id, 0, self.num_frames_of(entry_id))
        raise KeyError(f"video {entry_id!r} is not in cache {self.path}")

    def __len__(self) -> int:
        return len(self._entry_table())

    def __contains__(self, entry_id: object) -> bool:
        self._entry_table()
        return entry_id in self._entry_of or entry_id in self._live

    def ids(self) -> list[str]:
        """Every entry: whole videos by their id, windows of long videos as "<video>@<n>"."""
        return [e.id for e in self._entry_table()]

    def window_ids(self, video_id: str) -> list[str]:
        """The entries of one video in time order: [video_id] for a video scored whole."""
        table = self._entry_table()
        if video_id not in self._entries_of:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        return [table[i].id for i in self._entries_of[video_id]]

    def windows(self, video_id: str) -> list[tuple[float, float]]:
        """The (start_sec, end_sec) of each entry of a video, in time order; together they cover it."""
        times, duration = self._frame_column([video_id], "times")[video_id], self.duration(video_id)
        return [span_of(times, duration, e.start, e.stop) for e in self.entries(self.window_ids(video_id))]

    clip_ids = window_ids  # the names of tcmgc 0.1, kept for scripts
    clips = windows

    def _slot_rows(self, entries: Sequence[Entry]) -> np.ndarray:
        """(N, T) the rows of each entry's track that fill its slots (PAD: a padded slot)."""
        rule = self.settings.tracks
        starts, stops = [e.start for e in entries], [e.stop for e in entries]
        return layout(np.array(starts), np.array(stops), np.zeros(len(entries)), rule.num_frames, rule.padding)

    def entry_inputs(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs for many entries: frame features (N, T, D) float32 (a padded slot holds the padding
        feature) and the mask of real frames (N, T) bool, in the order given."""
        entries = self.entries(ids)
        tracks = {v: f for v, (_, f) in self.tracks([e.video for e in entries]).items()}
        out = np.zeros((len(entries), self.settings.num_frames, len(self.padding_feature)), np.float32)
        mask = np.zeros(out.shape[:2], dtype=bool)
        for i, (e, rows) in enumerate(zip(entries, self._slot_rows(entries), strict=True)):
            out[i], mask[i] = gather(tracks[e.video], rows, self.padding_feature)
        return out, mask

    def frames(self, entry_id: str) -> np.ndarray:
        """Preprocessed frames (T, S, S, 3) uint8 of an entry (zeros in padded slots); needs --store-frames."""
        entry = self.entry(entry_id)
        pixels = self.track_pixels(entry.video)
        return gather(pixels, self._slot_rows([entry])[0], np.zeros(pixels.shape[1:], np.uint8))[0]
