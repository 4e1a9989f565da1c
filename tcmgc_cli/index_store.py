"""Search indexes on disk: one part per cache segment, built once, read row by row, grown with the cache.

A part holds what a ranker computed for the live videos of one cache segment:

    <index folder>/part-<segment>/      (built under a temporary name, renamed into place when complete)
        table.npz       uids (V,), videos, paths, durations, offsets (V,) and counts (V,) into frames, times (F,),
                        entry_ids (E,), entry_video (E,), entry_start (E,), entry_stop (E,), pad (D,)
        frames.npy      (F, D) float16: the track frames as the ranker sees them
        coarse.npy      (E, D) float16: each entry's coarse vector (the first stage's shortlist reads these)
        temporal.npy    (E, T, D) float16: each entry's temporal-encoder output (TC-MGC only)

Segments are immutable, so a part never changes. When the cache grows, only the new segments get parts; when
segments merge, the merged segment's part copies what the old parts hold for the same tracks (by uid), so no track
runs through the temporal encoder twice; parts of segments that are gone are deleted. A replaced or removed video's
entries drop out because its uid is no longer live. Loading keeps only the coarse vectors and small tables in memory;
frames and temporal features are read from the files (positioned reads) when a query's candidates need them.

Where: `<cache>.d/index-<key>/`, or in the workspace when the cache's folder is read-only. The KEEP_INDEXES most
recently used indexes (one per checkpoint) are kept per folder.
"""

import functools
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import Entry, FeatureCache, segment_dir, video_entries
from tcmgc_cli.data.sampling import PAD, entry_rows
from tcmgc_cli.fileio import fsync_dir, stale_temp
from tcmgc_cli.ranking import Ranker

FORMAT = 1
KEEP_INDEXES = 3  # indexes kept per folder (the most recently used); older ones are deleted
BATCH_VIDEOS = 256  # videos read from the cache and encoded at a time while building a part


class RowFile:
    """The rows of a .npy file on disk, read with positioned reads (`os.preadv`) into fresh arrays.

    A query's candidates are scattered rows of files larger than memory: a memory mapping turns each into a page
    fault with read-ahead around it (measured: seconds for 500 candidates' 12 KB each, on a cold 12 GB file), while
    one read per run of consecutive rows, several in flight, reads just those bytes (tens of milliseconds)."""

    def __init__(self, path: Path) -> None:
        header = np.load(path, mmap_mode="r")  # parses the header; the mapping is dropped at once
        self.path, self.shape, self.dtype, self.offset = path, header.shape, header.dtype, header.offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del header
        self.fd = os.open(path, os.O_RDONLY)  # kept open: the rows stay readable if the file is deleted

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)

    def __len__(self) -> int:
        return int(self.shape[0])

    def read(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(n,) rising row numbers -> (n, *row shape), into `out` when given: one read per run of consecutive
        rows."""
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype) if out is None else out
        if not len(rows):
            return out
        flat = out.reshape(len(rows), -1).view(np.uint8)  # (n, row_bytes)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = list(zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist(), strict=True))

        def one(run: tuple[int, int]) -> None:
            a, b = run
            view = flat[a:b].reshape(-1).data  # (bytes,) a memoryview of the run's rows in `out`
            at, got = self.offset + int(rows[a]) * self.row_bytes, 0
            while got < len(view):  # a positioned read may return fewer bytes than asked
                n = os.preadv(self.fd, [view[got:]], at + got)
                if n == 0:
                    raise OSError(f"{self.path} is shorter than its header says")
                got += n

        if len(runs) > 8:
            list(_readers().map(one, runs))
        else:
            for run in runs:
                one(run)
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.read(np.arange(start, stop, dtype=np.int64))


@functools.cache
def _readers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(16, thread_name_prefix="tcmgc-read")  # reads in flight: disks answer several at once


class Stack:
    """Row files (or arrays in memory) stacked row-wise and read by global row number."""

    def __init__(self, parts: Sequence[RowFile | np.ndarray]) -> None:
        self.parts = list(parts)
        self.ends = np.cumsum([len(p) for p in self.parts], dtype=np.int64)  # (P,)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows (any shape, int) -> (*rows.shape, *row shape): only those rows are read from the files."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        first = self.parts[0]
        out = np.empty((len(flat), *first.shape[1:]), dtype=first.dtype)
        which = np.searchsorted(self.ends, flat, side="right")  # (n,) the part of each row
        for p in np.unique(which):
            mine = which == p
            local = flat[mine] - (self.ends[p - 1] if p else 0)
            wanted, back = np.unique(local, return_inverse=True)  # rising, each once
            part = self.parts[p]
            got = part.read(wanted) if isinstance(part, RowFile) else part[wanted]
            out[mine] = got[back]
        return out.reshape(*np.shape(rows), *first.shape[1:])


@dataclass
class Part:
    """One part on disk, opened: its tables in memory, its arrays read from the files when needed."""

    folder: Path
    table: dict[str, np.ndarray]
    frames: RowFile  # (F, D) float16
    coarse: RowFile  # (E, D) float16
    temporal: RowFile | None  # (E, T, D) float16 (TC-MGC only)

    @classmethod
    def open(cls, folder: Path) -> "Part":
        with np.load(folder / "table.npz", allow_pickle=False) as npz:
            table = {k: npz[k] for k in npz.files}
        temporal = RowFile(folder / "temporal.npy") if (folder / "temporal.npy").exists() else None
        return cls(folder, table, RowFile(folder / "frames.npy"), RowFile(folder / "coarse.npy"), temporal)

    def by_uid(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.table["uids"])}

    def entries_of(self, video: int) -> np.ndarray:
        return np.flatnonzero(self.table["entry_video"] == video)


@dataclass
class Loaded:
    """Parts of the live segments, joined: what `SearchIndex` stands on."""

    videos: list[str]
    paths: list[str]
    durations: np.ndarray  # (V,)
    offsets: np.ndarray  # (V,) first row of each live video in `frames`
    counts: np.ndarray  # (V,)
    times: np.ndarray  # (F,) float64, every row of `frames`
    frames: Stack  # (F, D) float16
    pad: np.ndarray  # (D,)
    entry_ids: list[str]
    entry_video: np.ndarray  # (E,) index into videos
    entry_start: np.ndarray  # (E,) first track frame, within the video
    entry_stop: np.ndarray  # (E,)
    entry_rows: np.ndarray  # (E,) row of each live entry in `temporal`
    coarse: torch.Tensor  # (E, D) float16, in memory
    temporal: Stack | None  # (E_all, T, D) float16


def keep_of(part: Part, live_uids: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which of a part's videos (V_p,) and entries (E_p,) are live."""
    uids = part.table["uids"].tolist()
    keep = np.fromiter((u in live_uids for u in uids), dtype=bool, count=len(uids))  # (V_p,)
    return keep, keep[part.table["entry_video"]]


def join(parts: list[Part], live_uids: set[str]) -> Loaded:
    """The live videos and entries of `parts` (a video is live when its uid is)."""
    videos: list[str] = []
    paths: list[str] = []
    entry_ids: list[str] = []
    durations, offsets, counts, times, entry_video, starts, stops, entry_rows_ = ([] for _ in range(8))
    dim = len(parts[0].table["pad"]) if parts else 0
    live_of = [keep_of(part, live_uids) for part in parts]
    coarse = np.empty((sum(int(live.sum()) for _, live in live_of), dim), np.float16)  # (E, D) filled part by part
    base_f = base_e = filled = 0
    for part, (keep, live) in zip(parts, live_of, strict=True):
        t = part.table
        number = np.cumsum(keep) - 1 + len(videos)  # global index of each kept video
        videos += t["videos"][keep].tolist()
        paths += t["paths"][keep].tolist()
        durations.append(t["durations"][keep])
        offsets.append(t["offsets"][keep] + base_f)
        counts.append(t["counts"][keep])
        times.append(t["times"])
        entry_ids += t["entry_ids"][live].tolist()
        entry_video.append(number[t["entry_video"][live]])
        starts.append(t["entry_start"][live])
        stops.append(t["entry_stop"][live])
        entry_rows_.append(np.flatnonzero(live) + base_e)
        mine = np.flatnonzero(live)  # (E_p live,)
        part.coarse.read(mine, out=coarse[filled : filled + len(mine)])
        filled += len(mine)
        base_f += len(part.frames)
        base_e += len(part.coarse)
    temporal = [p.temporal for p in parts if p.temporal is not None]

    def cat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)

    return Loaded(
        videos, paths, cat(durations, np.float64), cat(offsets, np.int64), cat(counts, np.int64),
        cat(times, np.float64), Stack([p.frames for p in parts]) if parts else Stack([np.zeros((0, dim), np.float16)]),
        parts[0].table["pad"] if parts else np.zeros(dim, np.float32), entry_ids, cat(entry_video, np.int64),
        cat(starts, np.int64), cat(stops, np.int64), cat(entry_rows_, np.int64),
        torch.from_numpy(coarse), Stack(temporal) if temporal and len(temporal) == len(parts) else None,
    )  # fmt: skip


# ---- building a part ----------------------------------------------------------------------------------------------
def build_part(
    target: Path, cache: FeatureCache, ranker: Ranker, videos: list[str], reuse: list[Part],
    on_encoded: Callable[[int], None] | None = None,
) -> None:  # fmt: skip
    """Write the part of `videos` (one segment's live videos) to `target`, atomically: what `reuse` holds for the
    same tracks (by uid) is copied, the rest is computed (`on_encoded(n)` after each batch of n new entries)."""
    rule = cache.settings.tracks
    uids = [cache.uid(v) for v in videos]
    counts = np.array([cache.num_frames_of(v) for v in videos], dtype=np.int64)
    entries = [video_entries(v, int(n), rule) for v, n in zip(videos, counts, strict=True)]
    per_video = np.array([len(e) for e in entries], dtype=np.int64)
    old = {u: (p, i) for p in reuse for u, i in p.by_uid().items()}
    dim = len(cache.padding_feature)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        out = _Arrays(tmp, int(counts.sum()), int(per_video.sum()), rule.num_frames, dim, ranker.keeps_temporal)
        f_off, e_off = np.cumsum(counts) - counts, np.cumsum(per_video) - per_video
        times = np.zeros(int(counts.sum()), np.float64)
        pad = np.asarray(ranker.frame_features(cache, [])[1], np.float32)  # a padded slot, as the ranker sees it
        fresh = [i for i, u in enumerate(uids) if u not in old]
        for i, u in enumerate(uids):
            if u in old:
                _copy_video(old[u], out, times, int(f_off[i]), int(e_off[i]))
        for start in range(0, len(fresh), BATCH_VIDEOS):
            chunk = fresh[start : start + BATCH_VIDEOS]
            _compute(cache, ranker, [videos[i] for i in chunk], [entries[i] for i in chunk], out, times,
                     f_off[chunk], e_off[chunk], rule.num_frames, rule.padding)  # fmt: skip
            if on_encoded:
                on_encoded(int(per_video[chunk].sum()))
        entry_video = np.repeat(np.arange(len(videos)), per_video)
        flat = [e for es in entries for e in es]
        np.savez(tmp / "table.npz", uids=np.array(uids, dtype=str), videos=np.array(videos, dtype=str),
                 paths=np.array([cache.video_path(v) for v in videos], dtype=str),
                 durations=np.array([cache.duration(v) for v in videos], dtype=np.float64), offsets=f_off,
                 counts=counts, times=times, entry_ids=np.array([e.id for e in flat], dtype=str),
                 entry_video=entry_video, entry_start=np.array([e.start for e in flat], dtype=np.int64),
                 entry_stop=np.array([e.stop for e in flat], dtype=np.int64), pad=pad)  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "segment": target.name.removeprefix("part-")}))
        _commit(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Arrays:
    """The part's .npy files, written a batch at a time through a short-lived mapping: a part may be larger than
    memory, and a build's resident memory stays that of one batch."""

    def __init__(self, folder: Path, frames: int, entries: int, t: int, d: int, temporal: bool) -> None:
        self.folder = folder
        shapes = {"frames": (frames, d), "coarse": (entries, d), **({"temporal": (entries, t, d)} if temporal else {})}
        for name, shape in shapes.items():
            np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float16, shape=shape).flush()
        self.has_temporal = temporal

    def put(self, name: str, where: slice | np.ndarray, values: np.ndarray) -> None:
        target = np.load(self.folder / f"{name}.npy", mmap_mode="r+")
        target[where] = values
        target.flush()
        del target  # unmapped: its pages leave this process


def _copy_video(found: tuple[Part, int], out: _Arrays, times: np.ndarray, f_at: int, e_at: int) -> None:
    part, i = found
    o, n = int(part.table["offsets"][i]), int(part.table["counts"][i])
    out.put("frames", slice(f_at, f_at + n), part.frames.rows(o, o + n))
    times[f_at : f_at + n] = part.table["times"][o : o + n]
    rows = part.entries_of(i)
    out.put("coarse", slice(e_at, e_at + len(rows)), part.coarse.read(rows))
    if out.has_temporal and part.temporal is not None:
        out.put("temporal", slice(e_at, e_at + len(rows)), part.temporal.read(rows))


@torch.no_grad()
def _compute(
    cache: FeatureCache, ranker: Ranker, videos: list[str], entries: list[list[Entry]], out: _Arrays, times: np.ndarray,
    f_at: np.ndarray, e_at: np.ndarray, num_frames: int, padding: str,
) -> None:  # fmt: skip
    """Frames, temporal features and coarse vectors of new videos, written into the part's arrays."""
    tracks = cache.tracks(videos)
    feats, pad = ranker.frame_features(cache, videos)
    inputs, masks, slots = [], [], []
    for v, es, fa, ea in zip(videos, entries, f_at, e_at, strict=True):
        track = np.asarray(feats[v], dtype=np.float32)  # (n, D)
        times[fa : fa + len(track)] = tracks[v][0]
        out.put("frames", slice(fa, fa + len(track)), track)
        for k, e in enumerate(es):
            rows = entry_rows(e.stop - e.start, num_frames, padding)  # (T,)
            x = track[np.maximum(rows, 0) + e.start]
            x[rows == PAD] = pad
            inputs.append(x)
            masks.append(rows != PAD)
            slots.append(ea + k)
    dev = ranker.device
    for i in range(0, len(inputs), 512):
        x = torch.from_numpy(np.stack(inputs[i : i + 512])).to(dev)  # (B, T, D)
        m = torch.from_numpy(np.stack(masks[i : i + 512])).to(dev)  # (B, T)
        temporal = ranker.temporal(x, m)
        at = np.asarray(slots[i : i + 512])
        if out.has_temporal:
            out.put("temporal", at, temporal.half().cpu().numpy())
        out.put("coarse", at, coarse_vectors(temporal, m, ranker.keeps_temporal).cpu().numpy())


def coarse_vectors(temporal: torch.Tensor, mask: torch.Tensor, whole: bool) -> torch.Tensor:
    """(B, T, D) -> (B, D) float16: the normalized mean of every slot's temporal feature (TC-MGC's first stage), or,
    for CLIP (`whole` False), of the real frames only, which is CLIP's own score up to float16."""
    if whole:
        return F.normalize(temporal.float().mean(1), dim=-1).half()
    m = mask[..., None].to(torch.float32)
    return F.normalize((temporal.float() * m).sum(1) / m.sum(1).clamp_min(1), dim=-1).half()


def _commit(tmp: Path, target: Path) -> None:
    """Rename a finished part folder into place (another process that built it first wins)."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    try:
        os.rename(tmp, target)
    except OSError:
        if not (target / "meta.json").is_file():
            raise
    fsync_dir(target.parent)


# ---- opening ------------------------------------------------------------------------------------------------------
def index_folders(key: str, cache: FeatureCache) -> list[Path]:
    """Where the index of `key` over this cache lives: beside the cache, else (read-only) in the workspace."""
    from tcmgc_cli.workspace import workspace_dir

    name = f"index-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    where = hashlib.sha1(str(cache.path.resolve()).encode()).hexdigest()[:8]
    return [segment_dir(cache.path) / name, workspace_dir() / "search-index" / f"{where}-{name}"]


def writable_folder(candidates: list[Path]) -> Path:
    """The first of `candidates` that exists with a complete part, else the first one that can be created."""
    for folder in candidates:
        if any(folder.glob("part-*/meta.json")):
            return folder
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            return folder
        except OSError:
            continue
    raise OSError(f"none of {', '.join(map(str, candidates))} is writable")


def sync_parts(
    folder: Path, cache: FeatureCache, ranker: Ranker, on_encoded: Callable[[int], None] | None = None
) -> Loaded:
    """Bring the parts in `folder` up to date with the cache's live segments (building only what is missing,
    reusing what old parts hold), delete the parts of segments that are gone, and join the live ones."""
    _clean_temps(folder)
    live = cache.live_by_segment()
    present = {p.name.removeprefix("part-"): p for p in folder.glob("part-*") if (p / "meta.json").is_file()}
    missing = [(seg, videos) for seg, videos in live if seg.stem not in present and videos]
    if missing:
        reuse = [Part.open(p) for p in present.values()]
        for seg, videos in missing:
            build_part(folder / f"part-{seg.stem}", cache, ranker, videos, reuse, on_encoded)
    wanted = {seg.stem for seg, videos in live if videos}
    for name, path in present.items():
        if name not in wanted:
            shutil.rmtree(path, ignore_errors=True)
    (folder / "used").write_text(str(time.time()))
    parts = [Part.open(folder / f"part-{seg.stem}") for seg, videos in live if videos]
    return join(parts, {cache.uid(v) for v in cache.videos()})


def prefetch(caches: Sequence[Path]) -> None:
    """Ask the kernel to read ahead, in the background, the coarse vectors of each cache's most recently used index
    (1 GB at a million entries): the model loads meanwhile, and `join` then finds them in memory."""
    folders = [max(found, key=_last_used) for c in caches if (found := list(segment_dir(c).glob("index-*")))]
    files = [f for folder in folders for f in folder.glob("part-*/coarse.npy")]
    if files:
        threading.Thread(target=_read_ahead, args=(files,), daemon=True, name="tcmgc-prefetch").start()


def _read_ahead(files: list[Path]) -> None:
    for file in files:
        try:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
        except OSError:  # gone meanwhile, or a file system without read-ahead: opening reads it as usual
            continue


def _clean_temps(folder: Path) -> None:
    for tmp in folder.glob(".tmp-part-*"):
        if stale_temp(tmp.name):  # left by a killed build
            shutil.rmtree(tmp, ignore_errors=True)


def prune_indexes(folder: Path) -> None:
    """Keep the KEEP_INDEXES most recently used indexes in a folder."""
    indexes = sorted(folder.glob("*index-*"), key=_last_used, reverse=True)
    for old in indexes[KEEP_INDEXES:]:
        shutil.rmtree(old, ignore_errors=True)


def _last_used(folder: Path) -> float:
    used = folder / "used"
    return used.stat().st_mtime if used.exists() else folder.stat().st_mtime
