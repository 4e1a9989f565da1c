"""Text-to-video search over a cache: results are videos, each with its best moments.

The cache holds one frame track per video; the index holds those frames as the ranker sees them (float16), the
entries derived from them (whole videos, or windows of a long one) and each entry's temporal-encoder output. Scores
are per entry, results per video (the best entry; at most `per_video` results from one video), each with its best
moments: windows of several lengths over the track around the video's best entries, scored by the same ranker
(TC-MGC: the window's frames with zero padding and mask, as in training; CLIP: the mean of the window's frames),
non-overlapping (non-maximum suppression). Two rankers (`ranking.py`):

- "tcmgc" (a trained checkpoint): stage 1 (coarse) is one matrix product of the normalized sentence features with
  one vector per entry (the normalized mean of its temporal-encoder frames), over the whole collection; stage 2 is
  full TC-MGC scoring of each query's best `candidates` through the factorized path.
- "clip" (no checkpoint needed): CLIP's own similarity of the sentence with the mean of the entry's frames, exact
  over the whole collection.

Moments cost a bounded amount per query: a cheap score of every candidate window (the mean similarity of the
sentence with the frames inside minus outside, the training-free TFVTG score) picks the few that the ranker scores
in full (MOMENT_BUDGET windows per query in all).
"""

import functools
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
from tcmgc_cli.data.sampling import PAD, entry_rows, span_of, windows_of_lengths
from tcmgc_cli.errors import ConfigError, NumericsError
from tcmgc_cli.index_store import Loaded, Stack, sync_parts
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.tcmgc import TextFeatures
from tcmgc_cli.ranking import Ranker, TcmgcRanker

MOMENT_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # candidate moment lengths, in track frames
MOMENT_BUDGET = 24  # candidate windows per query that the ranker scores in full (the rest only cheaply)
MOMENTS = 3  # moments listed per result
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


@dataclass
class Collection:
    """The cache's videos and entries as a search reads them: V videos, F track frames (memory-mapped), E entries
    of T slots, D dims."""

    videos: list[str]
    paths: list[str]
    durations: np.ndarray  # (V,) seconds
    offsets: np.ndarray  # (V,) int64 first row of each video in `frames`
    counts: np.ndarray  # (V,) int64 track frames of each video
    times: np.ndarray  # (F,) float64 frame start seconds, within each video
    frames: Stack  # (F, D) float16 frame features as the ranker sees them
    pad: torch.Tensor  # (D,) float32 what a zero-padded slot holds
    entry_ids: list[str]
    entry_video: np.ndarray  # (E,) int64 index into videos
    entry_start: np.ndarray  # (E,) int64 first track frame, within the video
    entry_stop: np.ndarray  # (E,) int64 one past the last
    num_frames: int  # T
    padding: str  # "zero" or "repeat"
    rows: torch.Tensor = field(init=False, repr=False)  # (E, T) int32 rows of `frames` filling each entry's slots

    def __post_init__(self) -> None:
        lengths = self.entry_stop - self.entry_start
        first = self.offsets[self.entry_video] + self.entry_start  # (E,) row of each entry's first frame
        rows = np.full((len(lengths), self.num_frames), PAD, dtype=np.int32)
        for length in np.unique(lengths):  # one layout per window length: a few
            mine = lengths == length
            base = entry_rows(int(length), self.num_frames, self.padding)  # (T,)
            rows[mine] = np.where(base == PAD, PAD, base[None] + first[mine, None])
        self.rows = torch.from_numpy(rows)

    @classmethod
    def of(cls, loaded: Loaded, num_frames: int, padding: str) -> "Collection":
        return cls(loaded.videos, loaded.paths, loaded.durations, loaded.offsets, loaded.counts, loaded.times,
                   loaded.frames, torch.from_numpy(np.asarray(loaded.pad, np.float32)), loaded.entry_ids,
                   loaded.entry_video, loaded.entry_start, loaded.entry_stop, num_frames, padding)  # fmt: skip

    def window_rows(self, video: int, start: int, stop: int) -> np.ndarray:
        """(T,) rows of `frames` filling the slots of frames [start, stop) of a video (PAD: zero padding)."""
        rows = entry_rows(stop - start, self.num_frames, self.padding)
        return np.where(rows == PAD, PAD, rows + start + int(self.offsets[video]))

    def inputs(self, windows: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of windows (video, start, stop): frames (n, T, D) float32 and the real-frame mask (n, T)."""
        if not windows:
            return torch.zeros(0, self.num_frames, len(self.pad)), torch.zeros(0, self.num_frames, dtype=torch.bool)
        return self.gather(torch.from_numpy(np.stack([self.window_rows(*w) for w in windows])))

    def entry_inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of entries idx (n,): frames (n, T, D) float32 and the real-frame mask (n, T)."""
        return self.gather(self.rows[idx].long())

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (n, T, D) float32 of rows (n, T) of `frames`, the padding feature where a row is PAD, and the
        mask of real frames."""
        mask = rows != PAD
        frames = torch.from_numpy(self.frames.take(rows.clamp_min(0).numpy())).float()  # (n, T, D)
        frames[~mask] = self.pad
        return frames, mask

    def track_frames(self, video: int) -> torch.Tensor:
        """(n, D) float32: a video's track."""
        off = int(self.offsets[video])
        return torch.from_numpy(self.frames.take(np.arange(off, off + int(self.counts[video])))).float()

    def span(self, video: int, start: int, stop: int) -> tuple[float, float]:
        off = int(self.offsets[video])
        return span_of(self.times[off : off + int(self.counts[video])], float(self.durations[video]), start, stop)

    def entry_times(self, entry: int) -> np.ndarray:
        """(T,) start seconds of an entry's slots (a padded slot: its last real frame's)."""
        rows = self.rows[entry].long().numpy()
        return np.asarray(self.times[np.where(rows == PAD, rows.max(), rows)], dtype=np.float64)


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


def window_proxy(relevance: np.ndarray, windows: list[tuple[int, int]], lo: int, hi: int) -> np.ndarray:
    """The training-free TFVTG score of windows [a, b) inside frames [lo, hi): the mean relevance inside the window
    minus the mean over the rest of [lo, hi) (0 outside when the window fills it). relevance (n,) per frame."""
    sums = np.concatenate([[0.0], np.cumsum(relevance[lo:hi], dtype=np.float64)])  # (hi - lo + 1,)
    total, length = sums[-1], hi - lo
    out = np.empty(len(windows))
    for n, (a, b) in enumerate(windows):
        inside = sums[b - lo] - sums[a - lo]
        rest = length - (b - a)
        out[n] = inside / (b - a) - ((total - inside) / rest if rest else 0.0)
    return out


def non_overlapping(windows: list[tuple[int, int]], scores: list[float], keep: int) -> list[int]:
    """Non-maximum suppression: the best windows by score, none overlapping a better one kept before it."""
    kept: list[int] = []
    for i in sorted(range(len(windows)), key=lambda j: -scores[j]):
        a, b = windows[i]
        if all(b <= windows[k][0] or a >= windows[k][1] for k in kept):
            kept.append(i)
            if len(kept) == keep:
                break
    return kept


class SearchIndex:
    """The entries of a cache prepared for one ranker.

    Full scoring needs per-entry tensors (LVA's keys and folded frame vectors) that do not depend on the query. Each
    query computes them for its candidates until the queries have computed as many as the collection holds; then
    they are computed once for every entry and kept, when they fit in `keep_bytes` (rent, then buy: never more than
    twice the work of knowing the number of queries in advance). A larger collection computes them per query.
    """

    def __init__(self, ranker: Ranker, loaded: Loaded, num_frames: int, padding: str,
                 cache_path: Path | None = None, keep_bytes: int = KEEP_LVA_BYTES) -> None:  # fmt: skip
        self.ranker, self.cache_path, self.loaded = ranker, cache_path, loaded
        self.checkpoint: Path | None = None  # the checkpoint file it was opened with (`reopen` keeps to it)
        self.collection = Collection.of(loaded, num_frames, padding)
        self.ids = self.collection.entry_ids
        self.coarse = loaded.coarse  # (E, D) float16 in memory: 1 KB an entry at D = 512
        self._temporal, self._temporal_rows = loaded.temporal, torch.from_numpy(loaded.entry_rows)
        e, t, d = len(self.ids), num_frames, self.coarse.shape[1]
        self.lva: LvaVideo | None = None
        self._lva_worth = e * t * (2 * d + 3 * t + 3) * 4 <= keep_bytes
        self._lva_rows = 0  # entries whose tensors queries have computed so far
        self._lva_lock = threading.Lock()

    @classmethod
    def from_cache(cls, ranker: Ranker | Trained, cache: FeatureCache) -> "SearchIndex":
        """An index of the whole cache built now, in a temporary folder (`open_index` keeps it beside the cache)."""
        ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # the files stay mapped once deleted
            loaded = sync_parts(Path(tmp), cache, ranker)
        rule = cache.settings.tracks
        return cls(ranker, loaded, rule.num_frames, rule.padding, cache.path)

    @functools.cached_property
    def video_paths(self) -> dict[str, str]:
        """video id -> its file, from the cache."""
        return dict(zip(self.collection.videos, self.collection.paths, strict=True))

    def fresh(self, keep_bytes: int = KEEP_LVA_BYTES) -> "SearchIndex":
        """A new index over the same files, as a new process would open it (no tensors kept yet)."""
        c = self.collection
        return SearchIndex(self.ranker, self.loaded, c.num_frames, c.padding, self.cache_path, keep_bytes)

    def temporal_of(self, idx: torch.Tensor) -> torch.Tensor:
        """(n, T, D) float32: the entries' temporal-encoder output (CLIP: their frames), read from the files."""
        if self._temporal is None:
            return self.collection.entry_inputs(idx)[0]
        return torch.from_numpy(self._temporal.take(self._temporal_rows[idx].numpy())).float()

    def masks(self, idx: torch.Tensor) -> torch.Tensor:
        """(n, T) bool: the entries' slots that hold a real frame."""
        return self.collection.rows[idx] != PAD

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
        for i in range(0, len(self.ids), batch):
            idx = torch.arange(i, min(i + batch, len(self.ids)))
            parts.append(self.ranker.lva_tensors(self.temporal_of(idx), self.masks(idx)))
        kept = [p for p in parts if p is not None]
        return LvaVideo.cat(kept) if kept and len(kept) == len(parts) else None

    @property
    def scorer(self) -> str:
        return self.ranker.name

    @property
    def trained(self) -> Trained:
        if not isinstance(self.ranker, TcmgcRanker):
            raise ConfigError("the clip scorer has no trained model")
        return self.ranker.trained

    def __len__(self) -> int:
        return len(self.ids)

    def encode_queries(self, queries: list[str]) -> tuple[TextFeatures, list[str]]:
        """Text features, and a note for each query cut to the text encoder's context."""
        empty = [i for i, q in enumerate(queries) if not q.strip()]
        if empty:
            raise ConfigError(f'query {empty[0] + 1} is empty: write a few words, e.g. tcmgc search "a dog runs".')
        tok = self.ranker.tokenizer
        notes = [
            f"query {i + 1} ({_shorten(q)}) is longer than {tok.length - 2} tokens: only its start is used"
            for i, q in enumerate(queries)
            if tok.truncated(q)
        ]
        with torch.no_grad():
            text = self.ranker.encode(tok(queries))
        return text, notes

    def search(
        self, queries: list[str], top_k: int = 10, candidates: int = 500, per_video: int = 1,
        video: str | None = None, moments: int = MOMENTS,
    ) -> tuple[list[list[Hit]], list[str]]:  # fmt: skip
        """Hits for each query (with `video`: that video's moments only), and notes about queries that were cut."""
        text, notes = self.encode_queries(queries)
        if video is not None:
            return [[self.video_hit(text.select(slice(q, q + 1)), video, moments)] for q in range(len(queries))], notes
        return self.search_features(text, top_k, candidates, per_video, moments), notes

    @torch.no_grad()
    def shortlist(self, text: TextFeatures, candidates: int) -> torch.Tensor:
        """Coarse stage: the `candidates` best entries per query by sentence . entry vector, (Q, C)."""
        return coarse_topk(self.coarse, F.normalize(text.sentence.float().cpu(), dim=-1), candidates)

    @torch.no_grad()
    def search_features(
        self, text: TextFeatures, top_k: int = 10, candidates: int = 500, per_video: int = 1, moments: int = MOMENTS
    ) -> list[list[Hit]]:
        if top_k < 1 or candidates < 1 or per_video < 1 or moments < 0:
            raise ConfigError("--top-k, --candidates and --per-video must be at least 1, --moments at least 0.")
        wanted = max(candidates, top_k)  # CLIP's coarse vectors are its own scores (float16): an exact shortlist
        shortlist = self.shortlist(text, wanted)  # (Q, C)
        scores = self._shortlist_scores(text, shortlist)  # (Q, C)
        return [
            self._rerank(text.select(slice(q, q + 1)), shortlist[q], scores[q], top_k, per_video, moments)
            for q in range(len(shortlist))
        ]

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
            temporal, mask = self.temporal_of(part).to(dev), self.masks(part).to(dev)
            both = self.ranker.reads_frames and self._temporal is not None  # else the frames are not read twice
            frames = self.collection.entry_inputs(part)[0].to(dev) if both else temporal
            parts.append(self.ranker.scores(text, frames, temporal, mask, self._kept_lva(part)).float().cpu())
        return torch.cat(parts, 1) if parts else torch.zeros(len(text.sentence), 0)

    @torch.no_grad()
    def window_scores(self, text: TextFeatures, windows: list[tuple[int, int, int]], chunk: int = 256) -> np.ndarray:
        """The ranker's scores (Q, n) of windows (video, start, stop) of tracks, each scored as an entry: its frames,
        zero padding and mask, through the temporal encoder."""
        dev = text.sentence.device
        parts = [np.zeros((len(text.sentence), 0), np.float32)]
        for i in range(0, len(windows), chunk):
            frames, mask = self.collection.inputs(windows[i : i + chunk])
            frames, mask = frames.to(dev), mask.to(dev)
            temporal = self.ranker.temporal(frames, mask)
            parts.append(self.ranker.scores(text, frames, temporal, mask).float().cpu().numpy())
        return np.concatenate(parts, 1)

    def _rerank(
        self, text: TextFeatures, idx: torch.Tensor, scores: torch.Tensor, top_k: int, per_video: int, moments: int
    ) -> list[Hit]:
        """One query's hits from its shortlist idx (C,) and their scores (C,)."""
        bad = idx[~torch.isfinite(scores)].tolist()
        if bad:
            names = ", ".join(self.ids[v] for v in bad[:5])
            raise NumericsError(
                f"{len(bad)} video(s) score NaN or infinity ({names}): their cached features or the checkpoint are "
                "broken. Rerun your `tcmgc extract` command with --verify, or use another checkpoint."
            )
        order = scores.argsort(descending=True)
        ranked = list(zip(idx[order].tolist(), scores[order].tolist(), strict=True))
        picked = pick(ranked, self.collection.entry_video, top_k, per_video)
        budget = moment_budget(len(picked))
        videos = [(int(self.collection.entry_video[e]), seeds) for e, _, seeds in picked]
        found = self.moments(text, videos, budget, moments) if moments else [[] for _ in picked]
        return [self._hit(rank, entry, score, best) for rank, ((entry, score, _), best)
                in enumerate(zip(picked, found, strict=True), 1)]  # fmt: skip

    def _hit(self, rank: int, entry: int, score: float, moments: list[tuple[int, int, float]]) -> Hit:
        c = self.collection
        v = int(c.entry_video[entry])
        spans = [(*c.span(v, a, b), s) for a, b, s in moments]
        listed = [{"start_sec": round(a, 3), "end_sec": round(b, 3), "score": round(s, 6)} for a, b, s in spans]
        start, end = (
            (spans[0][0], spans[0][1]) if spans else c.span(v, int(c.entry_start[entry]), int(c.entry_stop[entry]))
        )
        return Hit(rank, c.videos[v], score, c.paths[v], start, end, listed, self.scorer, self.ids[entry])

    def moments(
        self, text: TextFeatures, videos: list[tuple[int, list[tuple[int, float]]]], refine: list[int], keep: int
    ) -> list[list[tuple[int, int, float]]]:
        """For one query and each (video, its best entries first with their scores): its `keep` best non-overlapping
        moments (start frame, stop frame, score), best first. Candidate windows of MOMENT_LENGTHS around the video's
        two best entries are ranked by `window_proxy`; the video's `refine[i]` best of them are scored in full, beside
        those entries (whose scores are known)."""
        c = self.collection
        sentence = F.normalize(text.sentence[0].float().cpu(), dim=-1)  # (D,)
        plans: list[dict[tuple[int, int], float | None]] = []  # window -> its score, None until scored
        for (v, seeds), wanted in zip(videos, refine, strict=True):
            n = int(c.counts[v])
            relevance = (F.normalize(c.track_frames(v), dim=-1) @ sentence).numpy()  # (n,)
            proxies: dict[tuple[int, int], float] = {}
            for e, _ in seeds[:2]:
                a, b = int(c.entry_start[e]), int(c.entry_stop[e])
                margin = max(1, (b - a) // 4) if n > b - a else 0
                lo, hi = max(0, a - margin), min(n, b + margin)
                windows = windows_of_lengths(lo, hi, [m for m in MOMENT_LENGTHS if m <= max(b - a, c.num_frames)])
                for w, p in zip(windows, window_proxy(relevance, windows, lo, hi).tolist(), strict=True):
                    proxies[w] = max(p, proxies.get(w, p))
            best = sorted(proxies, key=lambda w: -proxies[w])[:wanted]  # stable: ties keep the candidates' order
            plan: dict[tuple[int, int], float | None] = dict.fromkeys(best)
            plan.update({(int(c.entry_start[e]), int(c.entry_stop[e])): score for e, score in seeds[:2]})
            plans.append(plan)
        todo = [
            (v, a, b) for (v, _), plan in zip(videos, plans, strict=True) for (a, b), s in plan.items() if s is None
        ]
        scored = iter(self.window_scores(text, todo)[0].tolist())
        out = []
        for plan in plans:
            windows = list(plan)
            scores = [next(scored) if s is None else s for s in plan.values()]
            out.append([(*windows[i], scores[i]) for i in non_overlapping(windows, scores, keep)])
        return out

    def video_hit(self, text: TextFeatures, video_id: str, keep: int = MOMENTS) -> Hit:
        """One video's moments for one query (`tcmgc search --video`): its entries scored in full, then moments
        around the best ones."""
        c = self.collection
        if video_id not in c.videos:
            raise ConfigError(f"video {video_id!r} is not in the cache: pick one from `tcmgc search` results.")
        v = c.videos.index(video_id)
        rows = torch.from_numpy(np.flatnonzero(c.entry_video == v))
        scores = self.full_scores(text, rows)[0]
        order = scores.argsort(descending=True)
        seeds = list(zip(rows[order].tolist(), scores[order].tolist(), strict=True))
        found = self.moments(text, [(v, seeds)], moment_budget(1, 2 * MOMENT_BUDGET), keep)[0]  # one video: more
        return self._hit(1, seeds[0][0], seeds[0][1], found)

    def attention_of(self, queries: torch.Tensor, entries: list[int]) -> np.ndarray:
        """How each query vector (n, D) spreads over the slots of each entry: (n, E, T)."""
        if not entries:
            return np.zeros((len(queries), 0, self.collection.num_frames), dtype=np.float32)
        dev, idx = queries.device, torch.tensor(entries)
        frames, _ = self.collection.entry_inputs(idx)
        with torch.no_grad():
            a = self.ranker.attention(queries, frames.to(dev), self.temporal_of(idx).to(dev))
        return a.float().cpu().numpy()

    def word_attention(self, query: str, video_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """For --explain: the words of a query, their attention over the real frames of the video's best entry for
        it (words, T'), and those frames' times."""
        c = self.collection
        if video_id not in c.videos:
            raise ConfigError(f"video {video_id!r} is not in the cache: pick one from the results.")
        rows = np.flatnonzero(c.entry_video == c.videos.index(video_id)).tolist()
        text, _ = self.encode_queries([query])
        entry = rows[int(self.full_scores(text, torch.tensor(rows))[0].argmax())] if len(rows) > 1 else rows[0]
        tok = self.ranker.tokenizer
        ids = tok([query])[0]
        n = int(ids.argmax()) + 1  # up to the end token
        words = [tok.decode_one(int(t)) for t in ids[:n]]
        real = self.masks(torch.tensor([entry]))[0].numpy()  # zero-padded slots are left out of the picture
        weights = self.attention_of(text.words[0, :n], [entry])[:, 0][:, real]
        return words, weights, c.entry_times(entry)[real]


def moment_budget(hits: int, total: int = MOMENT_BUDGET) -> list[int]:
    """Windows scored in full for each of `hits` results, best result first: shares of `total` falling with the
    rank (1/r, the top result matters most), at least 2 each."""
    weights = [1 / (r + 1) for r in range(hits)]
    return [max(2, round(total * w / sum(weights))) for w in weights]


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


def __getattr__(name: str) -> Any:
    """`open_search` and `open_index` live in `tcmgc_cli.opening`; importing them from here still works."""
    if name in ("open_search", "open_index", "ranker_key"):
        from tcmgc_cli import opening

        return getattr(opening, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
