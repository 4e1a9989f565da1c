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

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache, segment_dir
from tcmgc_cli.checkpoint import Trained, find_checkpoint, load_verified, save_verified
from tcmgc_cli.data.sampling import PAD, entry_rows, span_of, windows_of_lengths
from tcmgc_cli.errors import CheckpointError, ConfigError, NumericsError
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.encoder import TextEncoder
from tcmgc_cli.model.tcmgc import TextFeatures
from tcmgc_cli.ranking import ClipRanker, Ranker, TcmgcRanker

MOMENT_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # candidate moment lengths, in track frames
MOMENT_BUDGET = 32  # candidate windows per query that the ranker scores in full (the rest only cheaply)
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
    """The cache's videos and entries as a search reads them: V videos, F track frames, E entries of T slots, D."""

    videos: list[str]
    paths: list[str]
    durations: np.ndarray  # (V,) seconds
    offsets: np.ndarray  # (V,) int64 first track row of each video
    counts: np.ndarray  # (V,) int64 track frames of each video
    times: np.ndarray  # (F,) float64 frame start seconds, within each video
    frames: torch.Tensor  # (F, D) float16 frame features as the ranker sees them
    pad: torch.Tensor  # (D,) float32 what a zero-padded slot holds
    entry_ids: list[str]
    entry_video: np.ndarray  # (E,) int64 index into videos
    entry_start: np.ndarray  # (E,) int64 first track frame, within the video
    entry_stop: np.ndarray  # (E,) int64 one past the last
    num_frames: int  # T
    padding: str  # "zero" or "repeat"
    rows: torch.Tensor = field(init=False, repr=False)  # (E, T) int32 absolute track rows of each entry's slots

    def __post_init__(self) -> None:
        lengths = self.entry_stop - self.entry_start
        first = self.offsets[self.entry_video] + self.entry_start  # (E,) absolute row of each entry's first frame
        rows = np.full((len(lengths), self.num_frames), PAD, dtype=np.int32)
        for length in np.unique(lengths):  # one layout per window length: a few
            mine = lengths == length
            base = entry_rows(int(length), self.num_frames, self.padding)  # (T,)
            rows[mine] = np.where(base == PAD, PAD, base[None] + first[mine, None])
        self.rows = torch.from_numpy(rows)

    @classmethod
    def from_cache(cls, cache: FeatureCache, ranker: Ranker) -> "Collection":
        videos = cache.videos()
        tracks = cache.tracks(videos)
        feats, pad = ranker.frame_features(cache, videos)
        counts = np.array([len(tracks[v][0]) for v in videos], dtype=np.int64)
        entries = cache.entries()
        number = {v: i for i, v in enumerate(videos)}
        rule = cache.settings.tracks
        dim = len(pad)
        return cls(
            videos, [cache.video_path(v) for v in videos], np.array([cache.duration(v) for v in videos]),
            np.cumsum(counts) - counts, counts,
            np.concatenate([tracks[v][0] for v in videos]) if videos else np.zeros(0),
            torch.from_numpy(np.concatenate([feats[v] for v in videos]) if videos else np.zeros((0, dim))).half(),
            torch.from_numpy(np.asarray(pad, dtype=np.float32)), [e.id for e in entries],
            np.array([number[e.video] for e in entries], dtype=np.int64),
            np.array([e.start for e in entries], dtype=np.int64), np.array([e.stop for e in entries], dtype=np.int64),
            rule.num_frames, rule.padding,
        )  # fmt: skip

    def window_rows(self, video: int, start: int, stop: int) -> np.ndarray:
        """(T,) absolute track rows filling the slots of frames [start, stop) of a video (PAD: zero padding)."""
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
        """Frames (n, T, D) float32 of track rows (n, T), the padding feature where a row is PAD, and the mask."""
        mask = rows != PAD
        frames = self.frames[rows.clamp_min(0)].float()  # (n, T, D)
        frames[~mask] = self.pad
        return frames, mask

    def entry_windows(self, idx: list[int] | np.ndarray) -> list[tuple[int, int, int]]:
        return [(int(self.entry_video[i]), int(self.entry_start[i]), int(self.entry_stop[i])) for i in idx]

    def span(self, video: int, start: int, stop: int) -> tuple[float, float]:
        off = int(self.offsets[video])
        return span_of(self.times[off : off + int(self.counts[video])], float(self.durations[video]), start, stop)

    def entry_times(self, entry: int) -> np.ndarray:
        """(T,) start seconds of an entry's slots (a padded slot: its last real frame's)."""
        rows = self.window_rows(*self.entry_windows([entry])[0])
        return np.asarray(self.times[np.where(rows == PAD, rows.max(), rows)], dtype=np.float64)

    def to_payload(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "rows"}
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in out.items()}

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> "Collection":
        return cls(**{k: p[k].numpy() if k in _ARRAYS else p[k] for k in cls.__dataclass_fields__ if k != "rows"})


_ARRAYS = {"durations", "offsets", "counts", "times", "entry_video", "entry_start", "entry_stop"}


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

    def __init__(
        self, ranker: Ranker, collection: Collection, cache_path: Path | None = None,
        temporal: torch.Tensor | None = None, keep_bytes: int = KEEP_LVA_BYTES,
    ) -> None:  # fmt: skip
        self.ranker, self.collection, self.cache_path = ranker, collection, cache_path
        self.ids = collection.entry_ids
        self.temporal = self._encode_all() if temporal is None else temporal  # (E, T, D) float16
        self.coarse = F.normalize(self.temporal.float().mean(1), dim=-1).half()  # (E, D) float16: 1 KB an entry
        e, t, d = self.temporal.shape
        self.lva: LvaVideo | None = None
        self._lva_worth = e * t * (2 * d + 3 * t + 3) * 4 <= keep_bytes
        self._lva_rows = 0  # entries whose tensors queries have computed so far
        self._lva_lock = threading.Lock()

    @classmethod
    def from_cache(cls, ranker: Ranker | Trained, cache: FeatureCache) -> "SearchIndex":
        """Read every track and run the ranker's temporal encoder once over every entry (kept in float16)."""
        ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
        return cls(ranker, Collection.from_cache(cache, ranker), cache.path)

    @torch.no_grad()
    def _encode_all(self, batch: int = 512) -> torch.Tensor:
        c, dev = self.collection, self.ranker.device
        parts = [torch.zeros(0, c.num_frames, len(c.pad), dtype=torch.float16)]
        for i in range(0, len(self.ids), batch):
            frames, mask = c.entry_inputs(torch.arange(i, min(i + batch, len(self.ids))))
            parts.append(self.ranker.temporal(frames.to(dev), mask.to(dev)).half().cpu())
        return torch.cat(parts)

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
            parts.append(self.ranker.lva_tensors(self.temporal[idx].float(), self.masks(idx)))
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

    def save(self, path: Path, key: str) -> None:
        """Write the index atomically; `key` identifies the checkpoint and cache state it was built from."""
        save_verified({"key": key, "collection": self.collection.to_payload(), "temporal": self.temporal}, path)

    @classmethod
    def load(cls, ranker: Ranker | Trained, path: Path, key: str) -> "SearchIndex | None":
        """The saved index if it is intact and was built from the same checkpoint and cache state, else None."""
        try:
            payload = load_verified(path)
        except CheckpointError:
            return None
        if not isinstance(payload, dict) or payload.get("key") != key or "collection" not in payload:
            return None
        ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
        return cls(ranker, Collection.from_payload(payload["collection"]), temporal=payload["temporal"])

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
        wanted = len(self) if self.scorer == "clip" else max(candidates, top_k)  # CLIP scores are exact and cheap
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
            frames, mask = self.collection.entry_inputs(part)
            parts.append(self.ranker.scores(text, frames.to(dev), self.temporal[part].float().to(dev), mask.to(dev),
                                            self._kept_lva(part)).float().cpu())  # fmt: skip
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
        budget = max(3, MOMENT_BUDGET // max(1, len(picked)))
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
        self, text: TextFeatures, videos: list[tuple[int, list[tuple[int, float]]]], refine: int, keep: int
    ) -> list[list[tuple[int, int, float]]]:
        """For one query and each (video, its best entries first with their scores): its `keep` best non-overlapping
        moments (start frame, stop frame, score), best first. Candidate windows of MOMENT_LENGTHS around the video's
        two best entries are ranked by `window_proxy`; the `refine` best of them are scored in full, beside those
        entries (whose scores are known)."""
        c = self.collection
        sentence = F.normalize(text.sentence[0].float().cpu(), dim=-1)  # (D,)
        plans: list[dict[tuple[int, int], float | None]] = []  # window -> its score, None until scored
        for v, seeds in videos:
            off, n = int(c.offsets[v]), int(c.counts[v])
            relevance = (F.normalize(c.frames[off : off + n].float(), dim=-1) @ sentence).numpy()  # (n,)
            plan: dict[tuple[int, int], float | None] = {}
            for e, _ in seeds[:2]:
                a, b = int(c.entry_start[e]), int(c.entry_stop[e])
                margin = max(1, (b - a) // 4) if n > b - a else 0
                lo, hi = max(0, a - margin), min(n, b + margin)
                windows = windows_of_lengths(lo, hi, [m for m in MOMENT_LENGTHS if m <= max(b - a, c.num_frames)])
                proxy = window_proxy(relevance, windows, lo, hi)
                plan.update({windows[i]: None for i in np.argsort(-proxy, kind="stable")[:refine]})
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
        found = self.moments(text, [(v, seeds)], MOMENT_BUDGET, keep)[0]
        return self._hit(1, seeds[0][0], seeds[0][1], found)

    def attention_of(self, queries: torch.Tensor, entries: list[int]) -> np.ndarray:
        """How each query vector (n, D) spreads over the slots of each entry: (n, E, T)."""
        if not entries:
            return np.zeros((len(queries), 0, self.collection.num_frames), dtype=np.float32)
        dev, idx = queries.device, torch.tensor(entries)
        frames, _ = self.collection.entry_inputs(idx)
        with torch.no_grad():
            a = self.ranker.attention(queries, frames.to(dev), self.temporal[idx].float().to(dev))
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


def index_key(checkpoint: Path, cache: FeatureCache) -> str:
    """Changes whenever the checkpoint file or the cache's contents change."""
    h = hashlib.sha1()
    for p in [checkpoint, cache.path, *cache.segments()]:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


KEEP_INDEXES = 3  # saved search indexes kept per folder (the most recently built); older ones are deleted


def _shorten(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def index_locations(checkpoint: Path, cache: FeatureCache) -> list[Path]:
    """Where the index of this checkpoint and cache is kept: beside the cache, else (read-only cache folder) in
    the workspace."""
    from tcmgc_cli.workspace import workspace_dir

    name = f"search-{hashlib.sha1(f'{checkpoint.resolve()}|{cache.path.resolve()}'.encode()).hexdigest()[:12]}.pt"
    return [segment_dir(cache.path) / name, workspace_dir() / "search-index" / name]


def open_index(trained: Trained, checkpoint: Path, cache: FeatureCache) -> SearchIndex:
    """The search index for this checkpoint and cache: loaded when saved earlier for the same state, else built
    (the temporal encoder over every video) and saved for the next search (beside the cache when its folder is
    writable, else in the workspace). Each folder keeps the KEEP_INDEXES most recently built indexes."""
    file = find_checkpoint(checkpoint)
    key = index_key(file, cache)
    places = index_locations(file, cache)
    for path in places:
        index = SearchIndex.load(trained, path, key) if path.is_file() else None
        if index is not None:
            index.cache_path = cache.path
            return index
    index = SearchIndex.from_cache(trained, cache)
    for path in places:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            index.save(path, key)
        except OSError:
            continue  # not writable here: try the next place (the search itself goes on)
        _prune(path.parent)
        break
    return index


def _prune(folder: Path) -> None:
    saved = sorted(folder.glob("search-*.pt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in saved[KEEP_INDEXES:]:
        old.unlink(missing_ok=True)


SCORERS = ("auto", "tcmgc", "clip")


def open_search(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = "auto", scorer: str = "auto",
    pretrained: str | None = None,
) -> SearchIndex:  # fmt: skip
    """A search index ready for `search(["a dog runs"])`. scorer "tcmgc": a trained checkpoint (default: the
    newest run) over its cache (default: the workspace's for its model); "clip": the cache's own CLIP embeddings,
    no checkpoint needed (default cache: the workspace's only one); "auto": tcmgc when there is a checkpoint."""
    from tcmgc_cli.errors import CacheError
    from tcmgc_cli.evaluate import open_trained
    from tcmgc_cli.workspace import latest_run

    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {scorer!r}: use {', '.join(SCORERS)}.")
    source = checkpoint or (latest_run() if scorer != "clip" else None)
    if scorer == "tcmgc" and source is None:
        raise CheckpointError("no trained run in the workspace: train one, pass --checkpoint, or use --scorer clip.")
    if source is not None and scorer != "clip":
        trained, features, where = open_trained(source, cache, device)
        _check_not_empty(features, trained.spec.name)
        return open_index(trained, where, features)
    features = FeatureCache(cache or _only_workspace_cache())
    _check_not_empty(features, features.settings.encoder)
    text = _text_encoder(features, pretrained, device)
    if text.fingerprint != features.settings.encoder_fingerprint.removesuffix(":bf16"):
        raise CacheError(
            f"{features.path} was extracted with other {features.settings.encoder} weights than these: pass the "
            "--pretrained you extracted with."
        )
    return SearchIndex.from_cache(ClipRanker(text), features)


def _check_not_empty(cache: FeatureCache, model: str) -> None:
    from tcmgc_cli.errors import CacheError

    if len(cache) == 0:
        raise CacheError(f"{cache.path} holds no videos: run `tcmgc extract --videos DIR --model {model}`.")


def _only_workspace_cache() -> Path:
    from tcmgc_cli.errors import CacheError
    from tcmgc_cli.workspace import workspace_dir

    found = sorted((workspace_dir() / "cache").glob("*.h5"))
    if not found:
        raise CacheError("no cache in the workspace: run `tcmgc extract --videos DIR` first, or pass --cache FILE.")
    if len(found) > 1:
        raise ConfigError(
            f"the workspace holds {len(found)} caches ({', '.join(p.name for p in found)}): pass --cache."
        )
    return found[0]


def _text_encoder(cache: FeatureCache, pretrained: str | None, device: str) -> TextEncoder:
    from tcmgc_cli.model.registry import get_model_config

    entry = get_model_config(cache.settings.encoder)
    weights = entry["pretrained"] if pretrained is None else (None if pretrained.lower() == "none" else pretrained)
    return TextEncoder.load(entry["clip"], weights, device)
