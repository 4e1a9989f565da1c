"""Text-to-video search over a collection: results are videos, each with its best moments.

Scores are per entry (whole videos, or windows of a long one), results per video (the best entry; at most
`per_video` results from one video), each with its best moments (`moments.py`). Two stages:

- coarse: the store's top `candidates` entries per query by sentence . entry vector (`store.py`: the normalized mean
  of an entry's temporal-encoder frames for TC-MGC, of its frames for CLIP, whose coarse score is its own score);
- full: the ranker's scores of each query's candidates (`rankers.py`: TC-MGC through the factorized path).
"""

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained
from tcmgc_cli.defaults import CANDIDATES, MOMENTS, PER_VIDEO, TOP_K
from tcmgc_cli.errors import ConfigError, NumericsError
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.features import TextFeatures
from tcmgc_cli.options import EngineConfig, check_search
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.moments import MOMENT_BUDGET, Moment, find_moments, find_moments_batch, moment_budget
from tcmgc_cli.search.rankers import Ranker, TcmgcRanker
from tcmgc_cli.search.store import CoarseStore, PartsStore, sync_store

KEEP_LVA_BYTES = 512 << 20  # LVA's per-entry tensors are kept up to this size: 10,000 entries at ViT-B/32 sizes


@dataclass
class Hit:
    rank: int
    video_id: str  # the source video
    score: float  # the video's best entry's score (what ranks the videos)
    path: str
    start_sec: float  # the best moment, in seconds from the start of the video
    end_sec: float
    moments: list[dict[str, float]] = field(default_factory=list)  # the best few: start_sec, end_sec, score
    scorer: str = "tcmgc"  # "tcmgc" or "clip"
    entry: str = ""  # the best entry (the video id, or "<video>@<n>" for a window of a long video)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "video_id": self.video_id, "score": round(self.score, 6), "path": self.path,
                "start_sec": round(self.start_sec, 3), "end_sec": round(self.end_sec, 3), "moments": self.moments,
                "scorer": self.scorer, "entry": self.entry}  # fmt: skip


class SearchIndex:
    """A collection prepared for one ranker, with its coarse store.

    Full scoring needs per-entry tensors (LVA's keys and folded frame vectors) that do not depend on the query. Each
    query computes them for its candidates until the queries have computed as many as the collection holds; then
    they are computed once for every entry and kept, when they fit in `keep_bytes` (rent, then buy: never more than
    twice the work of knowing the number of queries in advance). A larger collection computes them per query.
    """

    def __init__(
        self, ranker: Ranker, collection: Collection, store: CoarseStore, cache_path: Path | None = None,
        keep_bytes: int = KEEP_LVA_BYTES,
    ) -> None:  # fmt: skip
        self.ranker, self.collection, self.store, self.cache_path = ranker, collection, store, cache_path
        self.checkpoint: Path | None = None  # the checkpoint file it was opened with (a reload keeps to it)
        self.engine: EngineConfig | None = None  # the vector engine of its coarse stage (None: the built-in index)
        self.notes: list[str] = []  # what a person should know about this index (an engine that lags its cache)
        e, t, d = len(collection), collection.num_frames, len(collection.pad)
        self.lva: LvaVideo | None = None
        self._lva_worth = e * t * (2 * d + 3 * t + 3) * 4 <= keep_bytes
        self._lva_rows = 0  # entries whose tensors queries have computed so far
        self._lva_lock = threading.Lock()

    @classmethod
    def from_cache(cls, ranker: Ranker | Trained, cache: FeatureCache) -> "SearchIndex":
        """An index of the whole cache built now, in a temporary folder (`open_index` keeps it beside the cache)."""
        ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # the files stay mapped once deleted
            store = PartsStore(Path(tmp), cache, ranker)
            sync_store(store, cache)
            collection = store.load()
        return cls(ranker, collection, store, cache.path)

    def fresh(self, keep_bytes: int = KEEP_LVA_BYTES) -> "SearchIndex":
        """A new index over the same files, as a new process would open it (no tensors kept yet)."""
        index = SearchIndex(self.ranker, self.collection, self.store, self.cache_path, keep_bytes)
        index.checkpoint, index.engine = self.checkpoint, self.engine
        return index

    @property
    def ids(self) -> list[str]:
        return self.collection.entry_ids

    @property
    def video_paths(self) -> dict[str, str]:
        return self.collection.video_paths

    @property
    def scorer(self) -> str:
        return self.ranker.name

    @property
    def trained(self) -> Trained:
        if not isinstance(self.ranker, TcmgcRanker):
            raise ConfigError("the clip scorer has no trained model")
        return self.ranker.trained

    def __len__(self) -> int:
        return len(self.collection)

    @torch.no_grad()
    def inputs_of(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Entries' frames and temporal-encoder outputs (n, T, D) float32 and their masks (n, T): the temporal
        outputs read from the index's files where it keeps them, else computed now (CLIP's are its frames); the
        frames read only where the ranker reads them or they are needed for that (else the temporal outputs
        stand in, any tensor of that shape being as good)."""
        c = self.collection
        if c.temporal is not None and c.temporal_rows is not None:
            temporal = torch.from_numpy(c.temporal.take(c.temporal_rows[idx.numpy()])).float()
            frames = c.entry_inputs(idx)[0] if self.ranker.reads_frames else temporal
            return frames, temporal, c.masks(idx)
        frames, mask = c.entry_inputs(idx)
        if not self.ranker.keeps_temporal:
            return frames, frames, mask
        exact, _ = c.entry_inputs(idx, exact=True)  # from the frames as extracted, kept in float16: as the parts do
        dev = self.ranker.device
        return frames, self.ranker.temporal(exact.to(dev), mask.to(dev)).half().float().cpu(), mask

    def temporal_of(self, idx: torch.Tensor) -> torch.Tensor:
        """(n, T, D) float32: the entries' temporal-encoder output (CLIP: their frames)."""
        return self.inputs_of(idx)[1]

    def _kept_lva(self, part: torch.Tensor) -> LvaVideo | None:
        """The kept LVA tensors of these entries, once worth keeping (None: the ranker computes them)."""
        if self.lva is None and self._lva_worth:
            self._lva_rows += len(part)
            if self._lva_rows >= len(self):
                with self._lva_lock:
                    if self.lva is None:
                        self.lva = self._all_lva_tensors()
                    self._lva_worth = self.lva is not None
        return None if self.lva is None else self.lva.select(part)

    @torch.no_grad()
    def _all_lva_tensors(self, batch: int = 4096) -> LvaVideo | None:
        parts = []
        for i in range(0, len(self), batch):
            idx = torch.arange(i, min(i + batch, len(self)))
            parts.append(self.ranker.lva_tensors(self.temporal_of(idx), self.collection.masks(idx)))
        kept = [p for p in parts if p is not None]
        return LvaVideo.cat(kept) if kept and len(kept) == len(parts) else None

    def encode_queries(self, queries: list[str]) -> tuple[TextFeatures, list[str]]:
        """Text features, and a note for each query cut to the text encoder's context."""
        check_search(queries, TOP_K, CANDIDATES, PER_VIDEO, MOMENTS)
        tok = self.ranker.tokenizer
        notes = [f"query {i + 1} ({_shorten(q)}) is longer than {tok.length - 2} tokens: only its start is used"
                 for i, q in enumerate(queries) if tok.truncated(q)]  # fmt: skip
        with torch.no_grad():
            text = self.ranker.encode(tok(queries))
        return text, notes

    def search(
        self, queries: list[str], top_k: int = TOP_K, candidates: int = CANDIDATES, per_video: int = PER_VIDEO,
        video: str | None = None, moments: int = MOMENTS,
    ) -> tuple[list[list[Hit]], list[str]]:  # fmt: skip
        """Hits for each query (with `video`: that video's moments only), and notes about queries that were cut.
        moments: how many moments each hit lists."""
        text, notes = self.encode_queries(queries)
        if video is not None:
            return [[self.video_hit(text.select(slice(q, q + 1)), video, moments)] for q in range(len(queries))], notes
        return self.search_features(text, top_k, candidates, per_video, moments), notes

    @torch.no_grad()
    def shortlist(self, text: TextFeatures, candidates: int) -> torch.Tensor:
        """Coarse stage: the `candidates` best entries per query by sentence . entry vector, (Q, C)."""
        return self.store.topk(F.normalize(text.sentence.float().cpu(), dim=-1), candidates)

    @torch.no_grad()
    def search_features(
        self, text: TextFeatures, top_k: int = TOP_K, candidates: int = CANDIDATES, per_video: int = PER_VIDEO,
        moments: int = MOMENTS,
    ) -> list[list[Hit]]:  # fmt: skip
        check_search([], top_k, candidates, per_video, moments)
        wanted = max(candidates, top_k)  # CLIP's coarse vectors are its own scores (float16): an exact shortlist
        shortlist = self.shortlist(text, wanted)  # (Q, C)
        scores = self._shortlist_scores(text, shortlist)  # (Q, C)
        picked = [self._rerank(shortlist[q], scores[q], top_k, per_video) for q in range(len(shortlist))]
        videos = [[(int(self.collection.entry_video[e]), seeds) for e, _, seeds in p] for p in picked]
        found = (find_moments_batch(self.ranker, self.collection, text, videos,
                                    [moment_budget(len(p)) for p in picked], moments)
                 if moments else [[[] for _ in p] for p in picked])  # fmt: skip  # the queries' windows together
        return [[self._hit(rank, entry, score, best) for rank, ((entry, score, _), best)
                 in enumerate(zip(p, f, strict=True), 1)] for p, f in zip(picked, found, strict=True)]  # fmt: skip

    def _shortlist_scores(self, text: TextFeatures, shortlist: torch.Tensor) -> torch.Tensor:
        """Each query's scores of its own shortlist (Q, C). Queries whose shortlists overlap (in a small collection
        each is all of it) are scored together over the union, which costs one pass instead of Q; the scores of a
        pair do not depend on the other entries, so a query's results are the same alone or in company."""
        union, where = torch.unique(shortlist, return_inverse=True)  # (U,), (Q, C): positions in the union
        if len(union) <= 2 * shortlist.shape[1]:
            return self.full_scores(text, union).gather(1, where)
        return torch.cat([self.full_scores(text.select(slice(q, q + 1)), shortlist[q]) for q in range(len(shortlist))])

    @torch.no_grad()
    def full_scores(self, text: TextFeatures, idx: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """The ranker's scores (Q, len(idx)) of the given entries."""
        dev = text.sentence.device
        parts = []
        for i in range(0, len(idx), chunk):
            part = idx[i : i + chunk]
            frames, temporal, mask = (x.to(dev) for x in self.inputs_of(part))
            parts.append(self.ranker.scores(text, frames, temporal, mask, self._kept_lva(part)).float().cpu())
        return torch.cat(parts, 1) if parts else torch.zeros(len(text.sentence), 0)

    def _rerank(
        self, idx: torch.Tensor, scores: torch.Tensor, top_k: int, per_video: int
    ) -> list[tuple[int, float, list[tuple[int, float]]]]:
        """One query's results from its shortlist idx (C,) and their scores (C,): `pick`'s (entry, score, seeds)."""
        bad = idx[~torch.isfinite(scores)].tolist()
        if bad:
            names = ", ".join(self.ids[v] for v in bad[:5])
            raise NumericsError(
                f"{len(bad)} video(s) score NaN or infinity ({names}): their cached features or the checkpoint are "
                "broken. Rerun your `tcmgc extract` command with --verify, or use another checkpoint."
            )
        order = scores.argsort(descending=True)
        ranked = list(zip(idx[order].tolist(), scores[order].tolist(), strict=True))
        return pick(ranked, self.collection.entry_video, top_k, per_video)

    def _hit(self, rank: int, entry: int, score: float, moments: list[Moment]) -> Hit:
        c = self.collection
        v = int(c.entry_video[entry])
        spans = [(*c.span(v, a, b), s) for a, b, s in moments]
        listed = [{"start_sec": round(a, 3), "end_sec": round(b, 3), "score": round(s, 6)} for a, b, s in spans]
        start, end = (
            (spans[0][0], spans[0][1]) if spans else c.span(v, int(c.entry_start[entry]), int(c.entry_stop[entry]))
        )
        return Hit(rank, c.videos[v], score, c.paths[v], start, end, listed, self.scorer, self.ids[entry])

    def video_number(self, video_id: str) -> int:
        """The position of a video in the collection; one line naming the fix when it is not there."""
        if video_id not in self.collection.video_paths:
            raise ConfigError(f"video {video_id!r} is not in the cache: pick one from `tcmgc search` results.")
        return self.collection.videos.index(video_id)

    def video_hit(self, text: TextFeatures, video_id: str, keep: int = MOMENTS) -> Hit:
        """One video's moments for one query (`tcmgc search --video`): its entries scored in full, then moments
        around the best ones."""
        v = self.video_number(video_id)
        rows = torch.from_numpy(self.collection.entries_of(v))
        scores = self.full_scores(text, rows)[0]
        order = scores.argsort(descending=True)
        seeds = list(zip(rows[order].tolist(), scores[order].tolist(), strict=True))
        budget = moment_budget(1, 2 * MOMENT_BUDGET)  # one video: more
        found = find_moments(self.ranker, self.collection, text, [(v, seeds)], budget, keep)[0]
        return self._hit(1, seeds[0][0], seeds[0][1], found)


def pick(
    ranked: list[tuple[int, float]], entry_video: np.ndarray, top_k: int, per_video: int, seeds: int = 3
) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """From entries ranked best first: the top_k results with at most per_video from one video, each with the
    `seeds` best entries of its video (entry, score), where its moments are looked for."""
    best_of: dict[int, list[tuple[int, float]]] = {}
    for entry, score in ranked:
        best_of.setdefault(int(entry_video[entry]), []).append((entry, score))
    taken: dict[int, int] = {}
    out = []
    for entry, score in ranked:
        video = int(entry_video[entry])
        if taken.get(video, 0) >= per_video:
            continue
        taken[video] = taken.get(video, 0) + 1
        out.append((entry, score, best_of[video][:seeds]))
        if len(out) == top_k:
            break
    return out


def _shorten(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")
