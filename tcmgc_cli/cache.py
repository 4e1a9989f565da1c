"""The HDF5 feature cache. This is the only module that imports h5py.

Layout. A cache is a root file `X.h5` plus a folder `X.h5.d/` of segment files. Every file has the same layout:
root attributes with the settings (schema, tool version, encoder and its weights fingerprint, sampling, image size)
and one row per video in stacked datasets:

    ids (n,) str | embeddings (n, T, D) f4 | timestamps (n, T) f4 | frame_indices (n, T) i8 | num_frames (n,) i4
    paths (n,) str | sizes (n,) i8 | mtimes (n,) i8 | sha1 (n,) str | videos (n,) str | spans (n, 2) f4
    [frames (n, T, S, S, 3) u1]

A row is one entry: a whole video (its id is the video's), or one clip of a long video (id "<video>@<n>"); `videos`
names each row's source video and `spans` its (start, end) seconds there. Files written before clips existed have
neither: each row is then a whole video, its span derived from its frame times. A video's rows are written
together, and a later file's rows of a video replace all of that video's earlier rows.

Crash safety. No file is ever modified in place: a writer builds each segment under a temporary name, fsyncs it and
renames it into place, so a SIGKILL at any moment leaves only whole segments. `compact()` merges the segments into a
new root the same way and records the merged segment names in it, so readers skip them even if deleting them was
interrupted. Readers open files lazily, read-only and without HDF5 file locking (nothing is written in place), and
drop their handles when pickled, so DataLoader workers reopen them.
"""

import contextlib
import io
import itertools
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcmgc_cli import __version__
from tcmgc_cli.errors import BusyError, CacheError
from tcmgc_cli.fileio import FolderLock, atomic_path, describe_os_error, stale_temp, write_text_atomic

SCHEMA_VERSION = 1
_STR = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class CacheSettings:
    """What must agree between a cache and a run that reads or extends it."""

    encoder: str  # model name, e.g. tcmgc-b32
    encoder_fingerprint: str  # open_clip name + hash of the image tower's weights
    sampling: dict[str, Any]  # SamplingConfig.to_dict()
    image_size: int  # crop side in pixels
    store_frames: bool = False  # whether preprocessed uint8 frames are kept
    clips: dict[str, float] | None = None  # {"seconds", "stride"}: long videos as overlapping clips; None: whole

    def mismatch(self, other: "CacheSettings") -> str | None:
        """A sentence naming the first difference, or None when `other` may share this cache."""
        for key in ("encoder_fingerprint", "sampling", "image_size", "store_frames", "clips"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                return f"{key} is {mine} in the cache but {theirs} in this run"
        return None


@dataclass
class VideoRecord:
    """One video's cached features and provenance."""

    video_id: str
    embeddings: np.ndarray  # (T, D) float32 frame features
    timestamps: np.ndarray  # (T,) float32 start time of each sampled frame, seconds
    frame_indices: np.ndarray  # (T,) int64 decoded frame index of each row
    num_frames: int  # distinct frames actually available (< T when padded by repetition)
    path: str
    size: int  # bytes
    mtime_ns: int
    sha1: str  # content fingerprint of the source file
    frames: np.ndarray | None = field(default=None, repr=False)  # (T, S, S, 3) uint8, with store_frames
    video: str = ""  # the source video's id ("" = video_id: a whole video)
    span: tuple[float, float] | None = None  # (start, end) seconds of this entry in its video (None: whole video)


def _write_attrs(f: h5py.File, settings: CacheSettings, merged: Sequence[str] = ()) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["tcmgc_version"] = __version__
    f.attrs["settings"] = json.dumps(asdict(settings), sort_keys=True)
    f.attrs["merged_segments"] = json.dumps(list(merged))


def _read_settings(f: h5py.File, path: Path) -> CacheSettings:
    version = int(f.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise CacheError(
            f"{path} has cache schema {version}, this tcmgc reads {SCHEMA_VERSION}: re-run `tcmgc extract`."
        )
    return CacheSettings(**json.loads(f.attrs["settings"]))


_images = itertools.count()


@contextlib.contextmanager
def _atomic_h5(path: Path, in_memory: bool = True) -> Iterator[h5py.File]:
    """Write an HDF5 file under a temporary name; it appears at `path` only once complete and synced.

    in_memory: HDF5 builds the file in memory and plain file writes put it on disk, so that a full disk, a quota or
    a read-only folder is an OSError of ours (a CacheError naming the fix) and never a failed write inside HDF5,
    which leaves the library in a state that crashes the process at exit. Segments and new roots are small; the
    merged root may be large, so `compact` writes it directly after checking the free space.
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


def _dataset(
    f: h5py.File, name: str, data: Any = None, shape: tuple[int, ...] | None = None, dtype: Any = None
) -> None:
    """A row dataset; numbers carry HDF5's Fletcher-32 checksum, one chunk per row, verified on every read."""
    shape = np.shape(data) if shape is None else shape
    if dtype is _STR or (data is not None and np.asarray(data).dtype.kind in "OUS"):
        f.create_dataset(name, data=data, shape=None if data is not None else shape, dtype=_STR)
        return
    chunks = (1, *shape[1:]) if len(shape) > 1 else (min(max(shape[0], 1), 4096),)
    f.create_dataset(name, data=data, shape=None if data is not None else shape, dtype=dtype,
                     chunks=chunks if shape[0] else None, fletcher32=bool(shape[0]))  # fmt: skip


def _write_rows(f: h5py.File, records: Sequence[VideoRecord], store_frames: bool) -> None:
    _dataset(f, "ids", [r.video_id for r in records], dtype=_STR)
    _dataset(f, "embeddings", np.stack([r.embeddings for r in records]).astype(np.float32))
    _dataset(f, "timestamps", np.stack([r.timestamps for r in records]).astype(np.float32))
    _dataset(f, "frame_indices", np.stack([r.frame_indices for r in records]).astype(np.int64))
    _dataset(f, "num_frames", np.array([r.num_frames for r in records], dtype=np.int32))
    _dataset(f, "paths", [r.path for r in records], dtype=_STR)
    _dataset(f, "sizes", np.array([r.size for r in records], dtype=np.int64))
    _dataset(f, "mtimes", np.array([r.mtime_ns for r in records], dtype=np.int64))
    _dataset(f, "sha1", [r.sha1 for r in records], dtype=_STR)
    _dataset(f, "videos", [r.video or r.video_id for r in records], dtype=_STR)
    _dataset(f, "spans", np.array([r.span or _whole_span(r.timestamps) for r in records], dtype=np.float32))
    if store_frames:
        frames = np.stack([r.frames for r in records if r.frames is not None])  # (n, T, S, S, 3)
        if len(frames) != len(records):
            raise ValueError("store_frames is on but a record has no frames")
        _dataset(f, "frames", frames)


def _whole_span(times: np.ndarray) -> tuple[float, float]:
    """(0, end) of a whole video known only by its sampled frame times: the last one plus one typical gap."""
    times = np.unique(np.asarray(times, dtype=np.float64))
    step = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    return 0.0, float(times[-1]) + step if len(times) else 0.0


def segment_dir(path: Path) -> Path:
    return path.with_name(path.name + ".d")


class FeatureCache:
    """Read access to a cache: `len()`, `in`, `ids()`, `embeddings(video_id)` -> (T, D) float32, and more."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"no cache at {self.path}: run `tcmgc extract` first, or pass --cache FILE.")
        self._index: dict[str, tuple[Path, int]] | None = None
        self._rows_of: dict[str, list[str]] = {}
        self._settings: CacheSettings | None = None
        self._handles: dict[Path, h5py.File] = {}

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

    def _build_index(self) -> dict[str, tuple[Path, int]]:
        root = self._file(self.path)
        self._settings = _read_settings(root, self.path)
        merged = set(json.loads(root.attrs.get("merged_segments", "[]")))
        index: dict[str, tuple[Path, int]] = {}
        rows_of: dict[str, list[str]] = {}  # video id -> its row ids
        for source in [self.path, *self.segments(exclude=merged)]:
            f = self._file(source)
            if source != self.path and (settings := _read_settings(f, source)) != self._settings:
                raise CacheError(
                    f"segment {source} was written with other settings ({settings.mismatch(self._settings)})."
                )
            if "ids" not in f:
                continue
            ids = list(f["ids"].asstr()[:])
            videos = list(f["videos"].asstr()[:]) if "videos" in f else ids
            for video in set(videos) & rows_of.keys():  # re-extracted: drop every earlier row of that video
                for old in rows_of.pop(video):
                    index.pop(old, None)
            for row, (rid, video) in enumerate(zip(ids, videos, strict=True)):
                index[rid] = (source, row)
                rows_of.setdefault(video, []).append(rid)
        self._rows_of = rows_of
        return index

    def segments(self, exclude: set[str] | frozenset[str] = frozenset()) -> list[Path]:
        folder = segment_dir(self.path)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("seg-*.h5") if p.name not in exclude)

    @property
    def index(self) -> dict[str, tuple[Path, int]]:
        if self._index is None:
            self._index = self._build_index()
        return self._index

    @property
    def settings(self) -> CacheSettings:
        _ = self.index
        assert self._settings is not None
        return self._settings

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self.index

    def ids(self) -> list[str]:
        """Every entry: whole videos by their id, clips of long videos as "<video>@<n>"."""
        return list(self.index)

    def videos(self) -> list[str]:
        """The source videos, each once."""
        _ = self.index
        return list(self._rows_of)

    def clip_ids(self, video_id: str) -> list[str]:
        """The entries of one video in time order: [video_id] for a whole video."""
        _ = self.index
        if video_id not in self._rows_of:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        rows = self._rows_of[video_id]
        return [r for _, r in sorted(zip(self.load_rows(rows, "spans")[:, 0].tolist(), rows, strict=True))]

    def clips(self, video_id: str) -> list[tuple[float, float]]:
        """The (start_sec, end_sec) of each indexed clip of a video, in time order; together they cover it from
        start to end (one span for a video no longer than one clip)."""
        rows = self.clip_ids(video_id)
        return [(float(a), float(b)) for a, b in self.load_rows(rows, "spans")]

    def _row(self, video_id: str, name: str) -> Any:
        if video_id not in self.index:
            raise KeyError(f"video {video_id!r} is not in cache {self.path}")
        source, row = self.index[video_id]
        try:
            return self._file(source)[name][row]
        except OSError as err:  # HDF5's checksum or a damaged chunk
            raise CacheError(damaged_message(self.path, [video_id], f"{name}: {str(err).splitlines()[0]}")) from err

    def embeddings(self, video_id: str) -> np.ndarray:
        """Frame features (T, D) float32 of an entry (a whole video, or a clip id from `clip_ids`); a damaged or
        non-finite row is a CacheError that names it."""
        if video_id not in self.index and video_id in self._rows_of:
            raise KeyError(f"video {video_id!r} is indexed as {len(self._rows_of[video_id])} clips: "
                           "read them by the ids of cache.clip_ids(video_id)")  # fmt: skip
        out = np.asarray(self._row(video_id, "embeddings"), dtype=np.float32)
        _check_finite(self.path, [video_id], out[None])
        return out

    def frames(self, video_id: str) -> np.ndarray:
        """Preprocessed frames (T, S, S, 3) uint8; needs a cache extracted with --store-frames."""
        if not self.settings.store_frames:
            raise CacheError(f"{self.path} holds no frames: re-extract with --store-frames into a new --cache.")
        return np.asarray(self._row(video_id, "frames"))

    def record(self, video_id: str, with_frames: bool = False) -> VideoRecord:
        get = self._row
        return VideoRecord(
            video_id=video_id,
            embeddings=self.embeddings(video_id),
            timestamps=np.asarray(get(video_id, "timestamps")),
            frame_indices=np.asarray(get(video_id, "frame_indices")),
            num_frames=int(get(video_id, "num_frames")),
            path=get(video_id, "paths").decode(),
            size=int(get(video_id, "sizes")),
            mtime_ns=int(get(video_id, "mtimes")),
            sha1=get(video_id, "sha1").decode(),
            frames=self.frames(video_id) if with_frames else None,
        )

    def rows_by_video(self) -> dict[str, list[str]]:
        _ = self.index
        return dict(self._rows_of)

    def source_stamps(self) -> dict[str, tuple[int, int, str]]:
        """(size, mtime_ns, sha1) of every cached video's source file, for skipping unchanged videos."""
        stamps: dict[str, tuple[int, int, str]] = {}
        by_file: dict[Path, list[tuple[str, int]]] = {}
        for video, row_ids in self.rows_by_video().items():
            source, row = self.index[row_ids[0]]
            by_file.setdefault(source, []).append((video, row))
        for source, pairs in by_file.items():
            f = self._file(source)
            sizes, mtimes, sha1 = f["sizes"][:], f["mtimes"][:], f["sha1"].asstr()[:]
            for vid, row in pairs:
                stamps[vid] = (int(sizes[row]), int(mtimes[row]), str(sha1[row]))
        return stamps

    def load_rows(self, ids: Sequence[str], name: str) -> np.ndarray:
        """One dataset's rows for many videos at once, in the order given (bulk reads per file; repeats allowed)."""
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for pos, vid in enumerate(ids):
            if vid not in self.index:
                raise KeyError(f"video {vid!r} is not in cache {self.path}")
            source, row = self.index[vid]
            by_file.setdefault(source, []).append((row, pos))
        out: np.ndarray | None = None
        for source, pairs in by_file.items():
            rows = np.array([r for r, _ in pairs])
            f = self._file(source)
            if name not in f and name in ("videos", "spans"):  # written before clips: whole videos
                data = _derived(f, name, rows)
            else:
                try:
                    data = _read_rows(f[name], rows)
                except OSError as err:
                    bad = self._damaged_ids([ids[p] for _, p in pairs], name)
                    raise CacheError(damaged_message(self.path, bad, f"{name}: {str(err).splitlines()[0]}")) from err
            if out is None:
                out = np.empty((len(ids), *data.shape[1:]), dtype=data.dtype)
            out[[p for _, p in pairs]] = data
        return out if out is not None else np.empty((0,))

    def _damaged_ids(self, ids: Sequence[str], name: str) -> list[str]:
        """The ids whose row of `name` cannot be read (one read each: only after a bulk read failed)."""
        bad = []
        for vid in dict.fromkeys(ids):
            try:
                self._row(vid, name)
            except CacheError:
                bad.append(vid)
        return bad

    def frame_masks(self, ids: Sequence[str]) -> np.ndarray | None:
        """(N, T) bool, True for a real frame, for a cache with zero padding (the reference's inputs); None when
        every slot holds a frame of the video (padding by repetition)."""
        sampling = self.settings.sampling
        if sampling.get("padding") != "zero":
            return None
        real = self.load_rows(ids, "num_frames").astype(np.int64)  # (N,)
        mask: np.ndarray = np.arange(int(sampling["num_frames"]))[None] < real[:, None]  # (1, T) < (N, 1) -> (N, T)
        return mask

    def load_embeddings(self, ids: Sequence[str]) -> np.ndarray:
        """Frame features of many videos at once, (N, T, D) float32, in the order given; damaged or non-finite
        rows are a CacheError that names their videos."""
        out = self.load_rows(ids, "embeddings").astype(np.float32, copy=False)
        _check_finite(self.path, ids, out)
        return out

    def verify(self, ids: Sequence[str] | None = None, block: int = 256) -> dict[str, str]:
        """{video_id: reason} for every cached row (or only `ids`) whose features are damaged or not finite."""
        ids = self.ids() if ids is None else list(ids)
        damaged: dict[str, str] = {}
        for start in range(0, len(ids), block):
            part = ids[start : start + block]
            try:
                self.load_embeddings(part)
            except CacheError:
                for vid in part:
                    try:
                        self.embeddings(vid)
                    except CacheError as err:
                        damaged[vid] = str(err)
        return damaged


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """ds[rows] for any rows (unsorted, repeated): h5py's point selection wants strictly increasing indices."""
    if len(rows) * 4 >= len(ds):
        with contextlib.suppress(OSError):  # a damaged row we may not need (superseded): read only ours below
            return np.asarray(ds[:][rows])  # most of the file: one sequential read beats point selection
    unique, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(ds[unique.tolist()])[inverse]


def _derived(f: h5py.File, name: str, rows: np.ndarray) -> np.ndarray:
    """The videos and spans of a file written before clips existed: every row a whole video."""
    if name == "videos":
        picked: np.ndarray = np.asarray(f["ids"][:], dtype=object)[rows]
        return picked
    return np.array([_whole_span(t) for t in _read_rows(f["timestamps"], rows)], dtype=np.float32)


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


class CacheWriter:
    """Adds videos to a cache, one atomic segment per `add`. One writer per cache (or per shard) at a time.

    shard: the rank of a distributed extract; each rank writes its own segments under its own lock, and the cache
    stays one logical cache that every reader sees whole.
    """

    def __init__(self, path: str | os.PathLike[str], settings: CacheSettings, shard: int | None = None) -> None:
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
        self._check_or_create_root()

    def _check_or_create_root(self) -> None:
        if not self.path.exists():
            with _atomic_h5(self.path) as f:
                _write_attrs(f, self.settings)
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

    def add(self, records: Sequence[VideoRecord]) -> Path:
        """Write `records` as one new segment, atomically."""
        name = f"seg-{time.time_ns():020d}-{os.getpid()}.h5"
        target = self.folder / name
        with _atomic_h5(target) as f:
            _write_attrs(f, self.settings)
            _write_rows(f, records, self.settings.store_frames)
        return target

    def compact(self) -> int:
        """Merge all segments into a new root file; returns the number of segments merged."""
        cache = FeatureCache(self.path)
        try:
            merged_before = set(json.loads(cache._file(self.path).attrs.get("merged_segments", "[]")))
            pending = cache.segments(exclude=merged_before)
            if not pending:
                return 0
            ids = cache.ids()
            _check_space(self.path, [self.path, *pending])
            with _atomic_h5(self.path, in_memory=False) as f:
                _write_attrs(f, self.settings, merged=[p.name for p in pending])
                _copy_rows(cache, ids, f, self.settings.store_frames)
        finally:
            cache.close()
        for seg in pending:  # oldest first; the new root lists them, so a crash here cannot resurrect old data
            seg.unlink()
        return len(pending)

    def write_failures(self, failures: dict[str, dict[str, str]]) -> None:
        """This writer's failures; a single writer also drops the records that shards of an earlier run left."""
        path = self.folder / ("failures.json" if self.shard is None else f"failures-r{self.shard}.json")
        if self.shard is None:
            for old in self.folder.glob("failures-r*.json"):
                old.unlink()
        write_text_atomic(path, json.dumps(failures, indent=1, ensure_ascii=False))

    def close(self) -> None:
        self._lock.close()


def _check_space(target: Path, sources: list[Path]) -> None:
    """Merging writes a new root as large as the root and its segments: refuse, before writing, where it cannot fit
    (the segments stay, and readers see the cache whole, merged or not)."""
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


def _copy_rows(cache: FeatureCache, ids: list[str], f: h5py.File, store_frames: bool, chunk: int = 256) -> None:
    """Copy every live row of `cache` into the empty file `f`, in chunks (frames can be large)."""
    if not ids:
        return
    first = cache.record(ids[0], with_frames=store_frames)
    n, t = len(ids), len(first.timestamps)
    _dataset(f, "ids", ids, dtype=_STR)
    specs: dict[str, tuple[tuple[int, ...], Any]] = {
        "embeddings": ((n, *first.embeddings.shape), np.float32),
        "timestamps": ((n, t), np.float32),
        "frame_indices": ((n, t), np.int64),
        "num_frames": ((n,), np.int32),
        "paths": ((n,), _STR),
        "sizes": ((n,), np.int64),
        "mtimes": ((n,), np.int64),
        "sha1": ((n,), _STR),
        "videos": ((n,), _STR),
        "spans": ((n, 2), np.float32),
    }
    if store_frames:
        assert first.frames is not None
        specs["frames"] = ((n, *first.frames.shape), np.uint8)
    for name, (shape, dtype) in specs.items():
        _dataset(f, name, shape=shape, dtype=dtype)
    for start in range(0, n, chunk):
        part = ids[start : start + chunk]
        for name in specs:
            f[name][start : start + len(part)] = cache.load_rows(part, name)
