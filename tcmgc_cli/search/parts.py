"""The built-in index's parts on disk: one per cache segment, built once, read row by row.

A part holds what a ranker computed for the live videos of one cache segment:

    <index folder>/part-<segment>/      (built under a temporary name, renamed into place when complete)
        table.npz       uids (V,), videos, paths, durations, offsets (V,) and counts (V,) into frames, times (F,),
                        entry_ids (E,), entry_video (E,), entry_start (E,), entry_stop (E,), pad (D,)
        frames.npy      (F, D) float16: the track frames as the ranker sees them
        coarse.npy      (E, D) float16: each entry's coarse vector (the first stage's shortlist reads these)
        temporal.npy    (E, T, D) float16: each entry's temporal-encoder output (TC-MGC only)

Segments are immutable, so a part never changes. When segments merge, the merged segment's part copies what the old
parts hold for the same tracks (by uid), so no track runs through the temporal encoder twice.
"""

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache, video_entries
from tcmgc_cli.fileio import fsync_dir
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.rankers import EncodedTrack, Ranker, encode_entries
from tcmgc_cli.search.rows import RowFile, Stack

FORMAT = 1
BATCH_VIDEOS = 256  # videos read from the cache and encoded at a time while building a part


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


def is_complete(folder: Path) -> bool:
    return (folder / "meta.json").is_file()


def part_uids(folder: Path) -> list[str]:
    """The uids of the tracks a part holds (read alone from its table)."""
    with np.load(folder / "table.npz", allow_pickle=False) as npz:
        return [str(u) for u in npz["uids"]]


def keep_of(part: Part, live_uids: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which of a part's videos (V_p,) and entries (E_p,) are live."""
    uids = part.table["uids"].tolist()
    keep = np.fromiter((u in live_uids for u in uids), dtype=bool, count=len(uids))  # (V_p,)
    return keep, keep[part.table["entry_video"]]


def join(parts: list[Part], live_uids: set[str], num_frames: int, padding: str) -> tuple[Collection, torch.Tensor]:
    """The live videos and entries of `parts` (a video is live when its uid is) as one collection, and their coarse
    vectors (E, D) float16 in memory (1 KB an entry at D = 512)."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("durations", "offsets", "counts", "times", "entry_video",
                                                         "entry_start", "entry_stop", "temporal_rows")}  # fmt: skip
    videos: list[str] = []
    paths: list[str] = []
    uids: list[str] = []
    entry_ids: list[str] = []
    dim = len(parts[0].table["pad"]) if parts else 0
    live_of = [keep_of(part, live_uids) for part in parts]
    coarse = np.empty((sum(int(live.sum()) for _, live in live_of), dim), np.float16)  # (E, D) filled part by part
    base_f = base_e = filled = 0
    for part, (keep, live) in zip(parts, live_of, strict=True):
        t = part.table
        number = np.cumsum(keep) - 1 + len(videos)  # global index of each kept video
        videos += t["videos"][keep].tolist()
        paths += t["paths"][keep].tolist()
        uids += t["uids"][keep].tolist()
        entry_ids += t["entry_ids"][live].tolist()
        for name, values in (("durations", t["durations"][keep]), ("offsets", t["offsets"][keep] + base_f),
                             ("counts", t["counts"][keep]), ("times", t["times"]),
                             ("entry_video", number[t["entry_video"][live]]), ("entry_start", t["entry_start"][live]),
                             ("entry_stop", t["entry_stop"][live]), ("temporal_rows", np.flatnonzero(live) + base_e)):  # fmt: skip
            cols[name].append(values)
        mine = np.flatnonzero(live)  # (E_p live,)
        part.coarse.read(mine, out=coarse[filled : filled + len(mine)])
        filled += len(mine)
        base_f += len(part.frames)
        base_e += len(part.coarse)
    temporal = [p.temporal for p in parts if p.temporal is not None]

    def cat(name: str, dtype: type) -> np.ndarray:
        return np.concatenate(cols[name]).astype(dtype) if cols[name] else np.zeros(0, dtype)

    collection = Collection(
        videos=videos, paths=paths, durations=cat("durations", np.float64), offsets=cat("offsets", np.int64),
        counts=cat("counts", np.int64), times=cat("times", np.float64),
        frames=Stack([p.frames for p in parts]) if parts else Stack([np.zeros((0, dim), np.float16)]),
        pad=np.asarray(parts[0].table["pad"] if parts else np.zeros(dim), np.float32), entry_ids=entry_ids,
        entry_video=cat("entry_video", np.int64), entry_start=cat("entry_start", np.int64),
        entry_stop=cat("entry_stop", np.int64), num_frames=num_frames, padding=padding,
        temporal=Stack(temporal) if temporal and len(temporal) == len(parts) else None,
        temporal_rows=cat("temporal_rows", np.int64), uids=uids,
    )  # fmt: skip
    return collection, torch.from_numpy(coarse)


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
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        dim = len(cache.padding_feature)
        out = _Arrays(tmp, int(counts.sum()), int(per_video.sum()), rule.num_frames, dim, ranker.keeps_temporal)
        f_off, e_off = np.cumsum(counts) - counts, np.cumsum(per_video) - per_video
        times = np.zeros(int(counts.sum()), np.float64)
        for i, u in enumerate(uids):
            if u in old:
                _copy_video(old[u], out, times, int(f_off[i]), int(e_off[i]))
        fresh = [i for i, u in enumerate(uids) if u not in old]
        for start in range(0, len(fresh), BATCH_VIDEOS):
            chunk = fresh[start : start + BATCH_VIDEOS]
            tracks = list(encode_entries(ranker, cache, [videos[i] for i in chunk]))
            _put_tracks(tracks, out, times, f_off[chunk], e_off[chunk])
            if on_encoded:
                on_encoded(int(per_video[chunk].sum()))
        flat = [e for es in entries for e in es]
        np.savez(tmp / "table.npz", uids=np.array(uids, dtype=str), videos=np.array(videos, dtype=str),
                 paths=np.array([cache.video_path(v) for v in videos], dtype=str),
                 durations=np.array([cache.duration(v) for v in videos], dtype=np.float64), offsets=f_off,
                 counts=counts, times=times, entry_ids=np.array([e.id for e in flat], dtype=str),
                 entry_video=np.repeat(np.arange(len(videos)), per_video),
                 entry_start=np.array([e.start for e in flat], dtype=np.int64),
                 entry_stop=np.array([e.stop for e in flat], dtype=np.int64),
                 pad=np.asarray(ranker.padding(cache.padding_feature), np.float32))  # fmt: skip
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


def _put_tracks(
    tracks: list[EncodedTrack], out: _Arrays, times: np.ndarray, f_at: np.ndarray, e_at: np.ndarray
) -> None:
    """Write newly encoded tracks at their rows (frames from f_at, entries from e_at): one write per array."""
    frame_rows = np.concatenate([np.arange(f, f + len(t.times)) for t, f in zip(tracks, f_at, strict=True)])
    entry_rows = np.concatenate([np.arange(e, e + len(t.coarse)) for t, e in zip(tracks, e_at, strict=True)])
    times[frame_rows] = np.concatenate([t.times for t in tracks])
    out.put("frames", frame_rows, np.concatenate([t.frames for t in tracks]))
    out.put("coarse", entry_rows, np.concatenate([t.coarse for t in tracks]))
    if out.has_temporal:
        out.put("temporal", entry_rows, np.concatenate([t.temporal for t in tracks]))


def _commit(tmp: Path, target: Path) -> None:
    """Rename a finished part folder into place (another process that built it first wins)."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    try:
        os.rename(tmp, target)
    except OSError:
        if not is_complete(target):
            raise
    fsync_dir(target.parent)
