"""The HDF5 feature cache of frame tracks. This is the only module that imports h5py.

Layout. A cache is a root file `X.h5`, written once, with the settings (schema, encoder and its weights
fingerprint, track rate, entry rule, image size) and the padding feature, plus a folder `X.h5.d/` of immutable
segment files, each holding the frame tracks of some videos:

    videos/ids (n,) str | videos/uids str | videos/paths | videos/sizes i8 | videos/mtimes i8 | videos/sha1 str
    videos/durations f8 | videos/offsets i8 | videos/counts i8      video v's frames are rows offset..offset+count
    frames/features (F, D) f4 | frames/times (F,) f8 | frames/indices (F,) i8 | [frames/pixels (F, S, S, 3) u1]
    removed (m,) str                                                videos this segment deletes from older ones

A track is a video's frames decoded at the cache's rate (`--fps`), each encoded once; its uid names it for good
(the segment it was first written to, and its row there), through merges, so that search indexes reuse what they
computed for it. Segments are ordered by name
(`seg-<ns>-<pid>-<generation>.h5`): a later segment's track of a video replaces the older ones, and its `removed`
list deletes videos from older segments. What the model scores are entries derived from the tracks when read
(`data/sampling.py`): a whole video (the reference's input) or windows of consecutive frames; the cache never
stores them, so a frame shared by two windows is stored and encoded once.

Growth. Extraction adds one segment per batch of videos. Segments merge in tiers, log-structured: when FANOUT
consecutive segments are of the same size class, they are rewritten as one, so adding K videos to a cache of N
writes O(K log N) data, never the whole cache.

Crash safety. No file is ever modified in place: every file is built under a temporary name, fsynced and renamed
into place, so a SIGKILL at any moment leaves only whole files. A merged segment names the segments it replaces,
and readers skip those even if deleting them was interrupted. Readers open files lazily, read-only and without HDF5
file locking, and drop their handles when pickled, so DataLoader workers reopen them. Numbers carry HDF5's
Fletcher-32 checksums, verified on every read: a damaged chunk is an error naming its videos.
"""

import contextlib
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcmgc_cli import __version__
from tcmgc_cli.config import TrackConfig
from tcmgc_cli.data.sampling import PAD, entry_rows, gather_rows, span_of, window_starts
from tcmgc_cli.errors import BusyError, CacheError
from tcmgc_cli.fileio import FolderLock, atomic_path, describe_os_error, stale_temp, write_text_atomic

SCHEMA_VERSION = 2
FANOUT = 8  # segments of one size class that merge into one
TIER_FRAMES = 4096  # segments under this many frames are the smallest size class
CHUNK_ROWS = 8  # frames per checksummed chunk of features
IN_MEMORY_BYTES = 256 << 20  # files up to this size are built in memory, then written with plain file writes
_STR = h5py.string_dtype("utf-8")
_SEGMENT = re.compile(r"^seg-(\d+)-(\d+)-(\d+)\.h5$")
VIDEO_COLUMNS: dict[str, Any] = {  # the per-video table: name -> dtype
    "ids": _STR, "uids": _STR, "paths": _STR, "sizes": np.int64, "mtimes": np.int64, "sha1": _STR,
    "durations": np.float64, "offsets": np.int64, "counts": np.int64,
}  # fmt: skip


@dataclass(frozen=True)
class CacheSettings:
    """What must agree between a cache and a run that reads or extends it."""

    encoder: str  # model name, e.g. tcmgc-b32
    encoder_fingerprint: str  # open_clip name + hash of the image tower's weights
    image_size: int  # crop side in pixels
    track: dict[str, Any]  # TrackConfig.to_dict(): track rate and the entry rule
    store_frames: bool = False  # whether the tracks' preprocessed uint8 frames are kept

    @property
    def tracks(self) -> TrackConfig:
        return TrackConfig(**self.track)

    @property
    def num_frames(self) -> int:
        """T: frames per scored entry."""
        return int(self.track["num_frames"])

    def mismatch(self, other: "CacheSettings") -> str | None:
        """A sentence naming the first difference, or None when `other` may share this cache."""
        for key in ("encoder_fingerprint", "track", "image_size", "store_frames"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                return f"{key} is {mine} in the cache but {theirs} in this run"
        return None


@dataclass
class Track:
    """One video's frame track and its provenance."""

    video_id: str
    times: np.ndarray  # (n,) float64 start time of each frame, seconds (the first is 0)
    features: np.ndarray  # (n, D) float32 CLIP image features, one per frame
    frame_indices: np.ndarray  # (n,) int64 decoded frame number of each row (-1: not from a decoder)
    duration: float  # seconds: the end of the video
    path: str = ""
    size: int = 0  # bytes of the source file
    mtime_ns: int = 0
    sha1: str = ""  # content fingerprint of the source file ("" when not computed)
    pixels: np.ndarray | None = field(default=None, repr=False)  # (n, S, S, 3) uint8, with store_frames


@dataclass(frozen=True)
class Entry:
    """What the model scores: T slots filled from track frames [start, stop) of one video."""

    id: str  # the video's id for a whole video, "<video>@<n>" for its n-th window
    video: str
    start: int
    stop: int


def clip_id(video_id: str, number: int) -> str:
    return f"{video_id}@{number:04d}"


def segment_dir(path: Path) -> Path:
    return path.with_name(path.name + ".d")


def _segment_key(path: Path) -> tuple[int, int, int]:
    found = _SEGMENT.match(path.name)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else (0, 0, 0)


def _tier(frames: int) -> int:
    return 0 if frames < TIER_FRAMES else int(math.log(frames / TIER_FRAMES, FANOUT)) + 1


# ---- writing files ------------------------------------------------------------------------------------------------
_images = itertools.count()


@contextlib.contextmanager
def _atomic_h5(path: Path, in_memory: bool = True) -> Iterator[h5py.File]:
    """Write an HDF5 file under a temporary name; it appears at `path` only once complete and synced.

    in_memory: HDF5 builds the file in memory and plain file writes put it on disk, so that a full disk, a quota or
    a read-only folder is an OSError of ours (a CacheError naming the fix) and never a failed write inside HDF5,
    which leaves the library in a state that crashes the process at exit. Large merges write directly after
    checking the free space.
    """
    if in_memory:
        f = h5py.File(f"{path}.in-memory-{os.getpid()}-{next(_images)}", "w", driver="core", backing_store=False)
        try:
            yield f
            f.flush()
            image = f.id.get_file_image()
        finally:
            f.close()
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(image)
        except OSError as err:
            raise CacheError(f"cannot write {path.name}: {describe_os_error(err, path.parent)}") from None
        return
    echoes = io.StringIO()  # h5py's objects of a failed file print the error again as they are freed
    try:
        with atomic_path(path) as tmp, contextlib.redirect_stderr(echoes), h5py.File(tmp, "w", locking=False) as f:
            yield f
    except (OSError, RuntimeError) as err:
        raise CacheError(f"cannot write {path.name}: {describe_os_error(err, path.parent)}") from None
    sys.stderr.write(echoes.getvalue())


def _column(f: h5py.File, name: str, dtype: Any, shape: tuple[int, ...], data: Any = None) -> h5py.Dataset:
    """A dataset; numbers carry Fletcher-32 checksums over chunks of rows, verified on every read. A chunk of frame
    features is CHUNK_ROWS frames (16 KB at D = 512): a damaged chunk names the few videos whose frames it holds."""
    if dtype is _STR:
        return f.create_dataset(name, shape=shape, dtype=_STR, data=data)
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, min(shape[0], 4096 if per_row == 1 else CHUNK_ROWS if per_row < 4096 else 1))
    return f.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=(rows, *shape[1:]) if shape[0] else None,
                            fletcher32=bool(shape[0]))  # fmt: skip


def _write_attrs(f: h5py.File, settings: CacheSettings, frames: int = 0, replaces: Sequence[str] = ()) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["tcmgc_version"] = __version__
    f.attrs["settings"] = json.dumps(asdict(settings), sort_keys=True)
    f.attrs["frames"] = frames
    f.attrs["replaces"] = json.dumps(list(replaces))


def _frame_shapes(dim: int, image_size: int, store_frames: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The frame columns: name -> (shape of one row, dtype)."""
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {"features": ((dim,), np.float32), "times": ((), np.float64),
                                                       "indices": ((), np.int64)}  # fmt: skip
    if store_frames:
        shapes["pixels"] = ((image_size, image_size, 3), np.uint8)
    return shapes


def _write_tracks(
    f: h5py.File, tracks: Sequence[Track], removed: Sequence[str], settings: CacheSettings, dim: int, stem: str
) -> None:
    counts = np.array([len(t.times) for t in tracks], dtype=np.int64)
    table = {
        "ids": [t.video_id for t in tracks], "uids": [f"{stem}:{i}" for i in range(len(tracks))],
        "paths": [t.path for t in tracks],
        "sizes": [t.size for t in tracks], "mtimes": [t.mtime_ns for t in tracks], "sha1": [t.sha1 for t in tracks],
        "durations": [t.duration for t in tracks], "offsets": np.cumsum(counts) - counts, "counts": counts,
    }  # fmt: skip
    for name, dtype in VIDEO_COLUMNS.items():
        _column(
            f,
            f"videos/{name}",
            dtype,
            (len(tracks),),
            np.asarray(table[name], dtype=object if dtype is _STR else dtype),
        )
    total = int(counts.sum())
    stacks: dict[str, list[Any]] = {"features": [t.features for t in tracks], "times": [t.times for t in tracks],
                                    "indices": [t.frame_indices for t in tracks], "pixels": [t.pixels for t in tracks]}  # fmt: skip
    for name, (shape, dtype) in _frame_shapes(dim, settings.image_size, settings.store_frames).items():
        data = np.concatenate(stacks[name]).astype(dtype) if tracks else None
        _column(f, f"frames/{name}", dtype, (total, *shape), data)
    _column(f, "removed", _STR, (len(removed),), np.asarray(list(removed), dtype=object))


def _read_settings(f: h5py.File, path: Path) -> CacheSettings:
    version = int(f.attrs.get("schema_version", -1))
    if version == 1:
        old = json.loads(f.attrs["settings"]).get("encoder", "MODEL")
        raise CacheError(
            f"{path} uses the earlier cache layout (clips stored whole); this tcmgc stores frame tracks. Rebuild it: "
            f"delete {path.name} and {path.name}.d/, then rerun `tcmgc extract --model {old}` with your --videos or --dataset."
        )
    if version != SCHEMA_VERSION:
        raise CacheError(f"{path} has cache schema {version}, this tcmgc reads {SCHEMA_VERSION}: rebuild it with `tcmgc extract`.")  # fmt: skip
    return CacheSettings(**json.loads(f.attrs["settings"]))


# ---- reading ------------------------------------------------------------------------------------------------------
@dataclass
class _Segment:
    """One segment's per-video table, read once."""

    path: Path
    table: dict[str, np.ndarray]  # VIDEO_COLUMNS -> (n,)
    removed: list[str]
    row_of: dict[str, int]


def _read_segment(f: h5py.File, path: Path) -> _Segment:
    try:
        table = {name: (f[f"videos/{name}"].asstr()[:] if dtype is _STR else f[f"videos/{name}"][:])
                 for name, dtype in VIDEO_COLUMNS.items()}  # fmt: skip
        removed = list(f["removed"].asstr()[:])
    except KeyError:
        raise CacheError(f"segment {path} lacks a table this tcmgc reads: it is damaged or was written by another "
                         "version. Move the cache away and extract again.") from None  # fmt: skip
    ids = [str(v) for v in table["ids"]]
    return _Segment(path, table, removed, dict(zip(ids, range(len(ids)), strict=True)))


def _resolve(segments: Sequence[_Segment]) -> dict[str, tuple[int, int]]:
    """The live videos of segments in order: video -> (segment position, row); later ones replace earlier ones."""
    live: dict[str, tuple[int, int]] = {}
    for pos, seg in enumerate(segments):
        for video in seg.removed:
            live.pop(video, None)
        for video, row in seg.row_of.items():
            live.pop(video, None)  # re-inserted: a replaced video moves to the end, in extraction order
            live[video] = (pos, row)
    return live


class FeatureCache:
    """Read access to a cache of frame tracks and the entries derived from them.

    Videos: `videos()`, `track(video)` -> (times (n,), features (n, D)). Entries (what the model scores): `len()`,
    `ids()`, `clip_ids(video)`, `clips(video)` (their spans in seconds), `embeddings(id)` -> (T, D),
    `entry_inputs(ids)` -> features (N, T, D) and the mask of real frames (N, T). `in` takes entry and video ids.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"no cache at {self.path}: run `tcmgc extract` first, or pass --cache FILE.")
        self._handles: dict[Path, h5py.File] = {}
        self._settings: CacheSettings | None = None
        self._padding: np.ndarray | None = None
        self._segments: list[_Segment] | None = None
        self._live: dict[str, tuple[int, int]] = {}
        self._entries: list[Entry] | None = None
        self._entry_of: dict[str, int] = {}
        self._entries_of: dict[str, list[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _file(self, path: Path) -> h5py.File:
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
            root = self._file(self.path)
            self._settings = _read_settings(root, self.path)
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
        folder = segment_dir(self.path)
        if not folder.is_dir():
            return []
        found = sorted((p for p in folder.glob("seg-*.h5") if _SEGMENT.match(p.name)), key=_segment_key)
        replaced: set[str] = set()
        for p in found:
            replaced.update(json.loads(self._file(p).attrs.get("replaces", "[]")))
        return [p for p in found if p.name not in replaced]

    def _load(self) -> list[_Segment]:
        if self._segments is None:
            settings = self.settings
            segments = []
            for path in self.segments():
                f = self._file(path)
                if (theirs := _read_settings(f, path)) != settings:
                    raise CacheError(f"segment {path} was written with other settings ({theirs.mismatch(settings)}).")
                segments.append(_read_segment(f, path))
            self._segments, self._live = segments, _resolve(segments)
        return self._segments

    def _video(self, video_id: str) -> tuple[_Segment, int]:
        segments = self._load()
        if video_id not in self._live:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        pos, row = self._live[video_id]
        return segments[pos], row

    def _value(self, video_id: str, name: str) -> Any:
        seg, row = self._video(video_id)
        return seg.table[name][row]

    def live_by_segment(self) -> list[tuple[Path, list[str]]]:
        """Each live segment with its live videos (in the segment's order): what a search index part covers."""
        segments = self._load()
        mine: list[list[tuple[int, str]]] = [[] for _ in segments]
        for video, (pos, row) in self._live.items():
            mine[pos].append((row, video))
        return [(seg.path, [v for _, v in sorted(rows)]) for seg, rows in zip(segments, mine, strict=True)]

    # -- videos --
    def videos(self) -> list[str]:
        """The source videos, each once, in the order they were extracted."""
        self._load()
        return list(self._live)

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
        segments = self._load()
        return {v: (int(segments[p].table["sizes"][r]), int(segments[p].table["mtimes"][r]),
                    str(segments[p].table["sha1"][r])) for v, (p, r) in self._live.items()}  # fmt: skip

    def track(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """A video's frame track: times (n,) float64 seconds and features (n, D) float32."""
        return self.tracks([video_id])[video_id]

    def track_times(self, video_id: str) -> np.ndarray:
        return self._frames_of([video_id], "times")[video_id]

    def tracks(self, videos: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The tracks of many videos, read in bulk: video -> (times (n,), features (n, D) float32); damaged or
        non-finite ones are a CacheError that names them."""
        feats = self._frames_of(videos, "features")
        times = self._frames_of(videos, "times")
        for video, f in feats.items():
            _check_finite(self.path, [video], f[None])
        return {v: (times[v], feats[v]) for v in feats}

    def track_pixels(self, video_id: str) -> np.ndarray:
        """A video's track as preprocessed frames (n, S, S, 3) uint8; needs a cache extracted with --store-frames."""
        if not self.settings.store_frames:
            raise CacheError(f"{self.path} holds no frames: re-extract with --store-frames into a new --cache.")
        return self._frames_of([video_id], "pixels")[video_id]

    def _frames_of(self, videos: Sequence[str], name: str) -> dict[str, np.ndarray]:
        """One frame column of many videos, grouped per segment (a large share of a segment in one read)."""
        segments = self._load()
        by_seg: dict[int, list[str]] = {}
        for video in dict.fromkeys(videos):
            if video not in self._live:
                raise KeyError(f"video {video!r} is not in cache {self.path}")
            by_seg.setdefault(self._live[video][0], []).append(video)
        out: dict[str, np.ndarray] = {}
        for pos, vids in by_seg.items():
            seg = segments[pos]
            ds = self._file(seg.path)[f"frames/{name}"]
            spans = [(int(seg.table["offsets"][seg.row_of[v]]), int(seg.table["counts"][seg.row_of[v]])) for v in vids]
            whole = None
            if sum(n for _, n in spans) * 4 >= len(ds):  # a large share: one sequential read
                with contextlib.suppress(OSError):  # a damaged chunk we may not need: read only ours below
                    whole = ds[:]
            bad = []
            for v, (o, n) in zip(vids, spans, strict=True):
                try:
                    out[v] = whole[o : o + n] if whole is not None else ds[o : o + n]
                except OSError as err:  # HDF5's checksum, or a damaged chunk
                    bad.append((v, str(err).splitlines()[0]))
            if bad:
                raise CacheError(damaged_message(self.path, [v for v, _ in bad], f"{name}: {bad[0][1]}"))
        return out

    # -- entries --
    def _entry_table(self) -> list[Entry]:
        if self._entries is None:
            self._load()
            rule = self.settings.tracks
            entries: list[Entry] = []
            for video, (pos, row) in self._live.items():
                count = int(self._segments[pos].table["counts"][row])  # type: ignore[index]
                entries.extend(video_entries(video, count, rule))
            self._entries = entries
            self._entry_of = {e.id: i for i, e in enumerate(entries)}
            self._entries_of = {}
            for i, e in enumerate(entries):
                self._entries_of.setdefault(e.video, []).append(i)
        return self._entries

    def entries(self, ids: Sequence[str] | None = None) -> list[Entry]:
        """Every entry, or those of the given ids (an entry id, or a video id: the whole video as one entry)."""
        table = self._entry_table()
        if ids is None:
            return list(table)
        return [self.entry(i) for i in ids]

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

    def clip_ids(self, video_id: str) -> list[str]:
        """The entries of one video in time order: [video_id] for a video scored whole."""
        self._entry_table()
        if video_id not in self._entries_of:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        return [self._entries[i].id for i in self._entries_of[video_id]]  # type: ignore[index]

    def clips(self, video_id: str) -> list[tuple[float, float]]:
        """The (start_sec, end_sec) of each entry of a video, in time order; together they cover it."""
        return [(float(a), float(b)) for a, b in self.spans(self.clip_ids(video_id))]

    def spans(self, ids: Sequence[str]) -> np.ndarray:
        """(N, 2) start and end seconds of entries in their videos."""
        entries = self.entries(ids)
        times = self._frames_of([e.video for e in entries], "times")
        return np.array([span_of(times[e.video], self.duration(e.video), e.start, e.stop) for e in entries]).reshape(
            -1, 2
        )

    def entry_rows(self, entry: Entry) -> np.ndarray:
        """(T,) the track rows that fill an entry's slots, PAD for a zero-padded one."""
        rule = self.settings.tracks
        rows = entry_rows(entry.stop - entry.start, rule.num_frames, rule.padding)
        return np.where(rows == PAD, PAD, rows + entry.start)

    def entry_inputs(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The model's inputs for many entries: frame features (N, T, D) float32 (a padded slot holds the padding
        feature) and the mask of real frames (N, T) bool, in the order given."""
        entries = self.entries(ids)
        tracks = {v: f for v, (_, f) in self.tracks([e.video for e in entries]).items()}
        rows = (
            np.stack([self.entry_rows(e) for e in entries])
            if entries
            else np.zeros((0, self.settings.num_frames), np.int64)
        )
        feats = [gather_rows(tracks[e.video], r, self.padding_feature) for e, r in zip(entries, rows, strict=True)]
        dim = len(self.padding_feature)
        out = np.stack(feats) if feats else np.zeros((0, self.settings.num_frames, dim), np.float32)
        return out.astype(np.float32, copy=False), rows != PAD

    def load_embeddings(self, ids: Sequence[str]) -> np.ndarray:
        """Frame features of many entries (N, T, D) float32, in the order given."""
        return self.entry_inputs(ids)[0]

    def frame_masks(self, ids: Sequence[str]) -> np.ndarray:
        """(N, T) bool: True for a slot that holds a real frame."""
        return np.stack([self.entry_rows(e) != PAD for e in self.entries(ids)])

    def embeddings(self, entry_id: str) -> np.ndarray:
        """Frame features (T, D) float32 of an entry, or of a whole video; damaged or non-finite rows are a
        CacheError that names it."""
        out: np.ndarray = self.entry_inputs([entry_id])[0][0]
        return out

    def entry_times(self, entry_id: str) -> np.ndarray:
        """(T,) start seconds of each slot's frame (a padded slot: the last real frame's)."""
        entry = self.entry(entry_id)
        rows = self.entry_rows(entry)
        times = self.track_times(entry.video)
        return np.asarray(times[np.where(rows == PAD, rows.max(), rows)], dtype=np.float64)

    def frames(self, entry_id: str) -> np.ndarray:
        """Preprocessed frames (T, S, S, 3) uint8 of an entry (zeros in padded slots); needs --store-frames."""
        entry = self.entry(entry_id)
        pixels = self.track_pixels(entry.video)
        rows = self.entry_rows(entry)
        return gather_rows(pixels, rows, np.zeros(pixels.shape[1:], np.uint8))

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


def video_entries(video: str, count: int, rule: TrackConfig) -> list[Entry]:
    """The entries of a video with `count` track frames: one (the whole video) or its windows."""
    starts = window_starts(count, rule.window, rule.step)
    if len(starts) == 1:
        return [Entry(video, video, 0, count)]
    return [Entry(clip_id(video, n), video, s, s + rule.window) for n, s in enumerate(starts)]


def _check_finite(path: Path, ids: Sequence[str], rows: np.ndarray) -> None:
    """rows (N, ...) float: a CacheError naming the videos whose rows hold NaN or infinity."""
    finite = np.isfinite(rows.reshape(len(rows), -1)).all(1)  # (N, ...) -> (N, -1) -> (N,)
    if not finite.all():
        bad = list(dict.fromkeys(ids[int(i)] for i in np.flatnonzero(~finite)))
        raise CacheError(damaged_message(path, bad, "features hold NaN or infinity"))


def damaged_message(path: Path, ids: Sequence[str], detail: str) -> str:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return (f"{path}: the cached features of {len(ids)} video(s) are damaged ({shown}; {detail}). "
            "Rerun your `tcmgc extract` command with --verify to re-extract them.")  # fmt: skip


# ---- writing ------------------------------------------------------------------------------------------------------
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
        self.folder = segment_dir(self.path)
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
            with _atomic_h5(self.path) as f:
                _write_attrs(f, self.settings)
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
        for p in sorted(self.folder.glob("seg-*.h5"), key=_segment_key):
            if p.name not in live:
                p.unlink(missing_ok=True)

    def add(self, tracks: Sequence[Track], removed: Sequence[str] = ()) -> Path:
        """Write `tracks` (and deletions of older videos) as one new segment, atomically."""
        for t in tracks:
            _check_track(t, self.dim, self.settings.store_frames)
        stem = f"seg-{time.time_ns():020d}-{os.getpid()}"
        target = self.folder / f"{stem}-00.h5"
        with _atomic_h5(target) as f:
            _write_attrs(f, self.settings, frames=sum(len(t.times) for t in tracks))
            _write_tracks(f, tracks, removed, self.settings, self.dim, stem)
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
        all_segments = cache._load()
        first = next(i for i, s in enumerate(all_segments) if s.path == run[0])
        segments = all_segments[first : first + len(run)]
        live = _resolve(segments)
        removed = sorted({v for s in segments for v in s.removed}) if first > 0 else []
        stamp, pid, gen = _segment_key(run[-1])
        target = self.folder / f"seg-{stamp:020d}-{pid}-{max(_segment_key(p)[2] for p in run) + 1:02d}.h5"
        frames = sum(int(segments[p].table["counts"][r]) for p, r in live.values())
        row_bytes = self.dim * 4 + 16 + (3 * self.settings.image_size**2 if self.settings.store_frames else 0)
        small = frames * row_bytes < IN_MEMORY_BYTES
        if not small:
            _check_space(target, run)
        with _atomic_h5(target, in_memory=small) as f:
            _write_attrs(f, self.settings, frames=frames, replaces=[p.name for p in run])
            _copy_tracks(
                cache,
                segments,
                live,
                removed,
                f,
                _frame_shapes(self.dim, self.settings.image_size, self.settings.store_frames),
            )
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
    tiers = [_tier(int(cache._file(p).attrs.get("frames", 0))) for p in segments]
    start = 0
    for i in range(1, len(segments) + 1):
        if i == len(segments) or tiers[i] != tiers[start]:
            if i - start >= FANOUT:
                return segments[start:i]
            start = i
    return []


def _copy_tracks(
    cache: FeatureCache, segments: list[_Segment], live: dict[str, tuple[int, int]], removed: list[str],
    f: h5py.File, columns: dict[str, tuple[tuple[int, ...], Any]], block: int = 1 << 16,
) -> None:  # fmt: skip
    """Copy the live videos' rows of `segments` into the empty file `f`: per source, in runs of contiguous frames."""
    order = sorted(live.items(), key=lambda kv: (kv[1][0], int(segments[kv[1][0]].table["offsets"][kv[1][1]])))
    table = {name: np.array([segments[p].table[name][r] for _, (p, r) in order], dtype=object if dtype is _STR else dtype)
             for name, dtype in VIDEO_COLUMNS.items()}  # fmt: skip
    counts = table["counts"].astype(np.int64)
    table["offsets"] = np.cumsum(counts) - counts
    for name, dtype in VIDEO_COLUMNS.items():
        _column(f, f"videos/{name}", dtype, (len(order),), table[name])
    total = int(counts.sum())
    for name, (shape, dtype) in columns.items():
        _column(f, f"frames/{name}", dtype, (total, *shape))
    _column(f, "removed", _STR, (len(removed),), np.asarray(removed, dtype=object))
    at = 0
    for pos, start, stop in _runs(order, segments):
        src = cache._file(segments[pos].path)
        for a in range(start, stop, block):
            b = min(stop, a + block)
            for name in columns:
                f[f"frames/{name}"][at : at + b - a] = src[f"frames/{name}"][a:b]
            at += b - a


def _runs(order: list[tuple[str, tuple[int, int]]], segments: list[_Segment]) -> Iterator[tuple[int, int, int]]:
    """(segment position, first row, stop row) of contiguous frame ranges, in the order of `order`."""
    current: list[int] | None = None
    for _, (pos, row) in order:
        o, n = int(segments[pos].table["offsets"][row]), int(segments[pos].table["counts"][row])
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


def read_failures(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The failures recorded by the last extract into this cache: {video_id: {"path", "reason"}}."""
    merged: dict[str, dict[str, str]] = {}
    for record in sorted(segment_dir(Path(path)).glob("failures*.json")):
        merged.update(json.loads(record.read_text()))
    return merged


def add_tracks(
    path: str | os.PathLike[str], tracks: Iterable[tuple[str, np.ndarray, np.ndarray, str | os.PathLike[str]]],
    batch: int = 4096,
) -> int:  # fmt: skip
    """Add precomputed frame tracks, each (video_id, times (n,), features (n, D), source_path), to a cache that
    `tcmgc extract` created; its settings apply (features must come from its encoder, at its --fps). Written as
    extraction writes, one atomic segment per `batch` tracks, then merged in tiers. A video already in the cache is
    replaced. The source file's size and mtime are recorded when it exists (its sha1 is not computed). Returns the
    number of tracks added.

        add_tracks("tcmgc-workspace/cache/tcmgc-b32.h5", [("walk", times, features, "walk.mp4")])
    """
    cache = FeatureCache(path)
    try:
        settings, fps = cache.settings, cache.settings.tracks.fps
    finally:
        cache.close()
    writer = CacheWriter(path, settings)
    added = 0
    try:
        items = iter(tracks)
        while chunk := [_as_track(item, fps) for item in itertools.islice(items, batch)]:
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
