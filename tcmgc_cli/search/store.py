"""The coarse stage's store: one vector per entry, kept in step with the cache, and the top k of a batch of sentence
vectors. `CoarseStore` is the seam another store (a vector engine) plugs into; `PartsStore` is the built-in one.

`sync_store` brings any store to the cache's state by track uid (a track's uid changes only when its video is
extracted again): the entries of tracks it lacks are added, those of tracks the cache no longer holds dropped.

The built-in store keeps one part per cache segment (`parts.py`) in `<cache>.d/index-<key>/` (or in the workspace
when the cache's folder is read-only); loading it joins the parts of the live segments into the collection a search
reads and keeps their coarse vectors in memory. The KEEP_INDEXES most recently used indexes are kept per folder.
"""

import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.fileio import stale_temp
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.parts import Part, build_part, is_complete, join, part_uids
from tcmgc_cli.search.rankers import Ranker
from tcmgc_cli.workspace import saved_indexes

KEEP_INDEXES = 3  # indexes kept per folder (the most recently used); older ones are deleted


class CoarseStore(Protocol):
    """Where the coarse stage's vectors live: one per entry of the cache's tracks."""

    def held(self) -> set[str]:
        """The uids of the tracks whose entries the store holds."""
        ...

    def add(self, videos: list[str], on_encoded: Callable[[int], None] | None = None) -> None:
        """Add the entries of these videos' tracks (new to the store), with their coarse vectors."""
        ...

    def drop(self, uids: set[str]) -> None:
        """Drop the entries of these tracks (removed or replaced videos)."""
        ...

    def topk(self, sentences: torch.Tensor, k: int) -> torch.Tensor:
        """The k best entries (Q, k), as positions in the collection, for normalized sentence vectors (Q, D)."""
        ...

    def count(self) -> int:
        """Entries held."""
        ...


def sync_store(store: CoarseStore, cache: FeatureCache, on_encoded: Callable[[int], None] | None = None) -> None:
    """Bring `store` to the cache's state: add the tracks it lacks, then drop those the cache no longer holds."""
    live = {cache.uid(v): v for v in cache.videos()}
    held = store.held()
    new = [v for u, v in live.items() if u not in held]
    if new:
        store.add(new, on_encoded)
    store.drop(held - set(live))


def coarse_topk(coarse: torch.Tensor, queries: torch.Tensor, k: int, block: int = 65536) -> torch.Tensor:
    """Indices (Q, k) of the largest queries . coarse rows, block by block (bounded memory at any V).

    A float16 index is multiplied in float16 (fast on CPUs with half-precision units; a shortlist needs no more).
    """
    best_val: torch.Tensor | None = None
    best_idx: torch.Tensor | None = torch.zeros(len(queries), 0, dtype=torch.long) if len(coarse) == 0 else None
    k = min(k, len(coarse))
    for start in range(0, len(coarse), block):
        part = coarse[start : start + block]
        scores = (queries.to(part.dtype) @ part.T).float()  # (Q, B)
        val, idx = scores.topk(min(k, scores.shape[1]), dim=1)
        idx = idx + start
        if best_val is None or best_idx is None:
            best_val, best_idx = val, idx
        else:
            both_val, both_idx = torch.cat([best_val, val], 1), torch.cat([best_idx, idx], 1)
            best_val, pick = both_val.topk(k, dim=1)
            best_idx = both_idx.gather(1, pick)
    assert best_idx is not None
    return best_idx


class MatrixStore:
    """Coarse vectors held in memory, (E, D) float16, in the collection's order: exact top k, block by block."""

    def __init__(self, coarse: torch.Tensor) -> None:
        self.coarse = coarse

    def topk(self, sentences: torch.Tensor, k: int) -> torch.Tensor:
        return coarse_topk(self.coarse, sentences, k)

    def count(self) -> int:
        return len(self.coarse)


class PartsStore(MatrixStore):
    """The built-in store: a part per live cache segment in `folder` (`parts.py`), joined when loaded."""

    def __init__(self, folder: Path, cache: FeatureCache, ranker: Ranker) -> None:
        super().__init__(torch.zeros(0, len(cache.padding_feature), dtype=torch.float16))
        self.folder, self.cache, self.ranker = folder, cache, ranker
        for tmp in folder.glob(".tmp-part-*"):
            if stale_temp(tmp.name):  # left by a killed build
                shutil.rmtree(tmp, ignore_errors=True)
        self.live = {seg.stem: videos for seg, videos in cache.live_by_segment() if videos}  # segment -> videos

    def _present(self) -> dict[str, Path]:
        return {p.name.removeprefix("part-"): p for p in self.folder.glob("part-*") if is_complete(p)}

    def held(self) -> set[str]:
        """The uids in the parts of live segments (a merge's new segment has no part yet: its tracks count as new)."""
        present = self._present()
        return {u for seg in self.live if seg in present for u in part_uids(present[seg])}

    def add(self, videos: list[str], on_encoded: Callable[[int], None] | None = None) -> None:
        """Build the parts of the segments that hold these videos, copying what any part holds for their tracks."""
        present = self._present()
        wanted = set(videos)
        reuse = [Part.open(p) for p in present.values()]
        for seg, members in self.live.items():
            if seg not in present and wanted.intersection(members):
                build_part(self.folder / f"part-{seg}", self.cache, self.ranker, members, reuse, on_encoded)

    def drop(self, uids: set[str]) -> None:
        """Gone tracks leave the joined collection by their uids; the parts of segments that are gone (merged
        away, or whose videos were all removed or replaced) are deleted."""
        for seg, path in self._present().items():
            if seg not in self.live:
                shutil.rmtree(path, ignore_errors=True)

    def complete(self) -> bool:
        """Whether every live segment has its part: the index can be loaded without building anything."""
        present = self._present()
        return bool(self.live) and all(seg in present for seg in self.live)

    def load(self) -> Collection:
        """The live segments' parts joined (only live tracks), their coarse vectors kept in memory."""
        (self.folder / "used").write_text(str(time.time()))
        parts = [Part.open(self.folder / f"part-{seg}") for seg in self.live]
        rule = self.cache.settings.tracks
        live_uids = {self.cache.uid(v) for v in self.cache.videos()}
        collection, self.coarse = join(parts, live_uids, rule.num_frames, rule.padding)
        return collection


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


def prefetch(caches: Sequence[Path]) -> None:
    """Ask the kernel to read ahead, in the background, the coarse vectors of each cache's most recently used index
    (1 GB at a million entries): the model loads meanwhile, and `join` then finds them in memory."""
    folders = [max(found, key=_last_used) for c in caches if (found := saved_indexes(c))]
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


def prune_indexes(folder: Path) -> None:
    """Keep the KEEP_INDEXES most recently used indexes in a folder."""
    indexes = sorted(folder.glob("*index-*"), key=_last_used, reverse=True)
    for old in indexes[KEEP_INDEXES:]:
        shutil.rmtree(old, ignore_errors=True)


def _last_used(folder: Path) -> float:
    used = folder / "used"
    return used.stat().st_mtime if used.exists() else folder.stat().st_mtime
