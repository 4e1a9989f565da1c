"""Text-to-video search over a cache: results are videos, each with its best moments.

Entries of the cache are whole videos or clips of long ones; scores are per entry, results per video (the best
entry, at most `per_video` results from one video) with the attended time span in the source video and the best few
clips as `moments`. Two scorers:

- "tcmgc" (a trained checkpoint): stage 1 (coarse) is one matrix product of the normalized sentence features with
  one vector per entry (the normalized mean of its temporal-encoder frames), over the whole collection; stage 2 is
  full TC-MGC scoring of each query's best `candidates` through the factorized path. The temporal encoder runs once
  per entry when the index is built (and the index is saved); LVA's tensors are computed for the candidates only.
- "clip" (no checkpoint needed): CLIP's own similarity of the sentence with the mean of the entry's frames, exact
  over the whole collection, and the moment from the sentence's similarity with each frame.
"""

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache, segment_dir
from tcmgc_cli.checkpoint import Trained, find_checkpoint, load_verified, save_verified
from tcmgc_cli.errors import CheckpointError, ConfigError, NumericsError
from tcmgc_cli.evaluate import frame_features
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.encoder import TextEncoder, Tokenizer, encode_tokens
from tcmgc_cli.model.tcmgc import TextFeatures, VideoFeatures


@dataclass
class Hit:
    rank: int
    video_id: str  # the source video
    score: float
    path: str
    start_sec: float  # the span of frames the query attends to most, absolute in the source video
    end_sec: float
    moments: list[dict[str, float]] = field(default_factory=list)  # the video's best clips: start_sec, end_sec, score
    scorer: str = "tcmgc"  # "tcmgc" or "clip"
    entry: str = ""  # the cache entry the span comes from (the video id, or "<video>@<n>" for a clip)

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "video_id": self.video_id, "score": round(self.score, 6), "path": self.path,
                "start_sec": round(self.start_sec, 3), "end_sec": round(self.end_sec, 3), "moments": self.moments,
                "scorer": self.scorer, "entry": self.entry}  # fmt: skip


def attended_span(
    weights: np.ndarray, times: np.ndarray, end_of_video: float, share: float = 0.5
) -> tuple[float, float]:
    """The contiguous run of frames around the most attended one whose weight is at least `share` of the maximum.

    weights (T,) over sampled frames, times (T,) their start seconds (non-decreasing, repeats for padded videos).
    """
    best = int(np.argmax(weights))
    lo = hi = best
    while lo > 0 and weights[lo - 1] >= share * weights[best]:
        lo -= 1
    while hi < len(weights) - 1 and weights[hi + 1] >= share * weights[best]:
        hi += 1
    later = times[times > times[hi]]
    end = float(later[0]) if len(later) else end_of_video
    return float(times[lo]), max(end, float(times[hi]))


def coarse_topk(coarse: torch.Tensor, queries: torch.Tensor, k: int, block: int = 65536) -> torch.Tensor:
    """Indices (Q, k) of the largest queries . coarse rows, block by block (bounded memory at any V).

    A float16 index is multiplied in float16 (fast on CPUs with half-precision units; a shortlist needs no more).
    """
    best_val: torch.Tensor | None = None
    best_idx: torch.Tensor | None = None
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


KEEP_LVA_BYTES = 512 << 20  # LVA's per-entry tensors are kept up to this size: 10,000 entries at ViT-B/32 sizes


class Ranker(Protocol):
    """What a scorer brings to a search index."""

    name: str  # "tcmgc" or "clip"
    tokenizer: Tokenizer

    def encode(self, tokens: torch.Tensor) -> TextFeatures: ...

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features, (B, T) real frames -> (B, T, D) the features the coarse vectors and scores read."""
        ...

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Q queries' full scores against C entries: frames, temporal (C, T, D), mask (C, T) -> (Q, C); `lva`: the
        entries' LVA tensors from `lva_tensors`, when kept (else computed here)."""
        ...

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        """The per-entry tensors that scoring would compute for every query, to keep (None: there are none)."""
        ...

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """How each query vector (n, D) spreads over the frames of E entries (E, T, D) -> (n, E, T), summing to 1."""
        ...


class TcmgcRanker:
    name = "tcmgc"

    def __init__(self, trained: Trained) -> None:
        self.trained, self.tokenizer = trained, trained.tokenizer

    def encode(self, tokens: torch.Tensor) -> TextFeatures:
        return self.trained.model.encode_text(tokens.to(self.trained.device))

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.trained.model.encode_video(frames, mask).temporal

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        model = self.trained.model
        lva_mask = mask if model.cfg.mask_padding else None  # LVA sees padded frames unless asked (method doc 4)
        lva = self.lva_tensors(temporal, mask) if lva is None else lva
        video = VideoFeatures(frames, temporal, lva_mask, lva)
        out: torch.Tensor = model.score_chunked(text, video, 64, len(frames))["logits"]
        return out

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        model = self.trained.model
        if model.head.lva is None:
            return None
        dev = self.trained.device
        return model.head.lva.precompute(temporal.to(dev), mask.to(dev) if model.cfg.mask_padding else None)

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """LVA's attention weights, else (no text conditioning) softmax frame similarities."""
        model = self.trained.model
        if model.head.lva is not None:
            keys = model.head.lva.layer_norm1(temporal)  # (E, T, D)
            return model.head.lva.weights(queries[:, None], keys, None)[:, 0]  # (n, 1, E, T) -> (n, E, T)
        sims = torch.einsum("nd,etd->net", F.normalize(queries, dim=-1), F.normalize(frames, dim=-1))
        return torch.softmax(model.cfg.isa_lambda * sims, dim=-1)


class ClipRanker:
    """CLIP's own similarity: sentence . normalized mean of the frames; moments from sentence . each frame."""

    name = "clip"

    def __init__(self, text: TextEncoder, sharpness: float = 100.0) -> None:
        self.text, self.tokenizer, self.sharpness = text, text.tokenizer, sharpness

    def encode(self, tokens: torch.Tensor) -> TextFeatures:
        words, sentence = encode_tokens(self.text.clip, tokens.to(self.text.device))
        return TextFeatures(words, sentence)

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        m = mask[..., None].to(frames.dtype)  # (C, T, 1): the mean of the real frames
        mean = (frames * m).sum(1) / m.sum(1).clamp_min(1)
        return F.normalize(text.sentence, dim=-1) @ F.normalize(mean, dim=-1).T  # (Q, C)

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        return None

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        sims = torch.einsum("nd,etd->net", F.normalize(queries, dim=-1), F.normalize(frames, dim=-1))  # (n, E, T)
        return torch.softmax(self.sharpness * sims, dim=-1)


@dataclass
class Entries:
    """The cache's entries as a search reads them (E entries, T frames, D dims)."""

    ids: list[str]  # entry ids: a video id, or "<video>@<n>" for a clip
    videos: list[str]  # each entry's source video
    spans: np.ndarray  # (E, 2) start and end seconds in the source video
    paths: list[str]
    times: np.ndarray  # (E, T) frame start times, seconds
    frames: torch.Tensor  # (E, T, D) CLIP frame features
    temporal: torch.Tensor  # (E, T, D) after the ranker's temporal encoder
    masks: torch.Tensor  # (E, T) bool: real frames (False: a zero-padded slot)

    def to_payload(self) -> dict[str, Any]:
        return {"ids": self.ids, "videos": self.videos, "spans": torch.from_numpy(self.spans), "paths": self.paths,
                "times": torch.from_numpy(self.times), "frames": self.frames.half(), "temporal": self.temporal.half(),
                "masks": self.masks}  # fmt: skip

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> "Entries":
        return cls(p["ids"], p["videos"], p["spans"].numpy(), p["paths"], p["times"].numpy(), p["frames"].float(),
                   p["temporal"].float(), p["masks"])  # fmt: skip


class SearchIndex:
    """The entries of a cache prepared for one scorer.

    Full scoring needs per-entry tensors (LVA's keys and folded frame vectors) that do not depend on the query. Each
    query computes them for its candidates until the queries have computed as many as the collection holds; then
    they are computed once for every entry and kept, when they fit in `keep_bytes` (rent, then buy: never more than
    twice the work of knowing the number of queries in advance). A larger collection computes them per query.
    """

    def __init__(
        self, ranker: Ranker, entries: Entries, cache_path: Path | None = None, keep_bytes: int = KEEP_LVA_BYTES
    ) -> None:
        self.ranker, self.entries, self.cache_path = ranker, entries, cache_path
        self.ids, self.frames, self.temporal = entries.ids, entries.frames, entries.temporal
        self.coarse = F.normalize(entries.temporal.mean(1), dim=-1).half()  # (E, D) float16: 1 KB an entry at D = 512
        e, t, d = entries.temporal.shape
        self.lva: LvaVideo | None = None
        self._lva_worth = e * t * (2 * d + 3 * t + 3) * 4 <= keep_bytes
        self._lva_rows = 0  # entries whose tensors queries have computed so far
        self._lva_lock = threading.Lock()

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
        parts = [self.ranker.lva_tensors(self.temporal[i : i + batch], self.entries.masks[i : i + batch])
                 for i in range(0, len(self.ids), batch)]  # fmt: skip
        kept = [p for p in parts if p is not None]
        return LvaVideo.cat(kept) if kept and len(kept) == len(parts) else None

    @property
    def scorer(self) -> str:
        return self.ranker.name

    @property
    def trained(self) -> Trained:
        assert isinstance(self.ranker, TcmgcRanker), "the clip scorer has no trained model"
        return self.ranker.trained

    @classmethod
    def from_cache(cls, ranker: Ranker | Trained, cache: FeatureCache, batch: int = 512) -> "SearchIndex":
        """Read every entry and run the ranker's temporal encoder once over it (features kept in float16)."""
        ranker = TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker
        ids = cache.ids()
        found = cache.frame_masks(ids)
        masks = (
            torch.ones(len(ids), cache.settings.sampling["num_frames"], dtype=torch.bool)
            if found is None
            else torch.from_numpy(found)
        )
        frames, temporal = [], []
        with torch.no_grad():
            for i in range(0, len(ids), batch):
                if isinstance(ranker, TcmgcRanker):
                    t = ranker.trained
                    x = frame_features(t.model, cache, ids[i : i + batch], t.device, t.visual_trained)
                else:
                    assert isinstance(ranker, ClipRanker)
                    x = torch.from_numpy(cache.load_embeddings(ids[i : i + batch])).to(ranker.text.device)
                frames.append(x.half().cpu())  # (B, T, D)
                temporal.append(ranker.temporal(x, masks[i : i + batch].to(x.device)).half().cpu())
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in cache.load_rows(ids, "paths")]
        videos = [v.decode() if isinstance(v, bytes) else str(v) for v in cache.load_rows(ids, "videos")]
        entries = Entries(ids, videos, cache.load_rows(ids, "spans").astype(np.float64), paths,
                          cache.load_rows(ids, "timestamps"), torch.cat(frames).float(), torch.cat(temporal).float(),
                          masks)  # fmt: skip
        return cls(ranker, entries, cache.path)

    def save(self, path: Path, key: str) -> None:
        """Write the index atomically; `key` identifies the checkpoint and cache state it was built from."""
        save_verified({"key": key, **self.entries.to_payload()}, path)

    @classmethod
    def load(cls, ranker: Ranker | Trained, path: Path, key: str) -> "SearchIndex | None":
        """The saved index if it is intact and was built from the same checkpoint and cache state, else None."""
        try:
            payload = load_verified(path)
        except CheckpointError:
            return None
        if not isinstance(payload, dict) or payload.get("key") != key or "masks" not in payload:
            return None
        return cls(TcmgcRanker(ranker) if isinstance(ranker, Trained) else ranker, Entries.from_payload(payload))

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
        self, queries: list[str], top_k: int = 10, candidates: int = 500, per_video: int = 1
    ) -> tuple[list[list[Hit]], list[str]]:
        """Hits for each query, and notes about queries that were cut."""
        text, notes = self.encode_queries(queries)
        return self.search_features(text, top_k, candidates, per_video), notes

    @torch.no_grad()
    def shortlist(self, text: TextFeatures, candidates: int) -> torch.Tensor:
        """Coarse stage: the `candidates` best entries per query by sentence . entry vector, (Q, C)."""
        return coarse_topk(self.coarse, F.normalize(text.sentence.float().cpu(), dim=-1), candidates)

    @torch.no_grad()
    def search_features(
        self, text: TextFeatures, top_k: int = 10, candidates: int = 500, per_video: int = 1
    ) -> list[list[Hit]]:
        if top_k < 1 or candidates < 1 or per_video < 1:
            raise ConfigError("--top-k, --candidates and --per-video must be at least 1.")
        wanted = len(self) if self.scorer == "clip" else max(candidates, top_k)  # CLIP scores are exact and cheap
        shortlist = self.shortlist(text, wanted)  # (Q, C)
        scores = self._shortlist_scores(text, shortlist)  # (Q, C)
        return [
            self._rerank(text.sentence[q : q + 1], shortlist[q], scores[q], top_k, per_video)
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
        """The scorer's scores (Q, len(idx)) of the given entries."""
        dev = text.sentence.device
        parts = []
        for i in range(0, len(idx), chunk):
            part = idx[i : i + chunk]
            lva = self._kept_lva(part)
            parts.append(self.ranker.scores(text, self.frames[part].to(dev), self.temporal[part].to(dev),
                                            self.entries.masks[part].to(dev), lva).float().cpu())  # fmt: skip
        return torch.cat(parts, 1)

    def _rerank(
        self, sentence: torch.Tensor, idx: torch.Tensor, scores: torch.Tensor, top_k: int, per_video: int
    ) -> list[Hit]:
        """One query's hits from its shortlist idx (C,) and their scores (C,); sentence (1, D) places the moments."""
        bad = idx[~torch.isfinite(scores)].tolist()
        if bad:
            names = ", ".join(self.ids[v] for v in bad[:5])
            raise NumericsError(
                f"{len(bad)} video(s) score NaN or infinity ({names}): their cached features or the checkpoint are "
                "broken. Rerun your `tcmgc extract` command with --verify, or use another checkpoint."
            )
        order = scores.argsort(descending=True)
        ranked = list(zip(idx[order].tolist(), scores[order].tolist(), strict=True))
        picked = pick(ranked, self.entries.videos, top_k, per_video)
        weights = self.attention_of(sentence, [entry for entry, _, _ in picked])[0]  # (k, T)
        return [self._hit(rank, entry, score, w, moments)
                for rank, ((entry, score, moments), w) in enumerate(zip(picked, weights, strict=True), 1)]  # fmt: skip

    def _hit(self, rank: int, entry: int, score: float, weights: np.ndarray, moments: list[tuple[int, float]]) -> Hit:
        e = self.entries
        real = e.masks[entry].numpy()  # a moment is made of real frames, never of zero-padded slots
        start, end = attended_span(weights[real], e.times[entry][real], float(e.spans[entry, 1]))
        best = [{"start_sec": round(float(e.spans[m, 0]), 3), "end_sec": round(float(e.spans[m, 1]), 3),
                 "score": round(s, 6)} for m, s in moments]  # fmt: skip
        return Hit(rank, e.videos[entry], score, e.paths[entry], start, end, best, self.scorer, e.ids[entry])

    def attention_of(self, queries: torch.Tensor, entries: list[int]) -> np.ndarray:
        """How each query vector (n, D) spreads over the frames of each entry: (n, E, T)."""
        if not entries:
            return np.zeros((len(queries), 0, self.frames.shape[1]), dtype=np.float32)
        dev, idx = queries.device, torch.tensor(entries)
        with torch.no_grad():
            a = self.ranker.attention(queries, self.frames[idx].to(dev), self.temporal[idx].to(dev))
        return a.float().cpu().numpy()

    def word_attention(self, query: str, video_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """For --explain: the words of a query, their attention over the frames of the video's best entry for it
        (words, T), and those frames' times."""
        rows = [i for i, v in enumerate(self.entries.videos) if v == video_id] or [
            i for i, e in enumerate(self.ids) if e == video_id
        ]
        if not rows:
            raise ConfigError(f"video {video_id!r} is not in the cache: pick one from the results.")
        text, _ = self.encode_queries([query])
        entry = rows[int(self.full_scores(text, torch.tensor(rows))[0].argmax())] if len(rows) > 1 else rows[0]
        tok = self.ranker.tokenizer
        ids = tok([query])[0]
        n = int(ids.argmax()) + 1  # up to the end token
        words = [tok.decode_one(int(t)) for t in ids[:n]]
        real = self.entries.masks[entry].numpy()  # the real frames (zero-padded slots are left out of the picture)
        return words, self.attention_of(text.words[0, :n], [entry])[:, 0][:, real], self.entries.times[entry][real]


def pick(
    ranked: list[tuple[int, float]], videos: list[str], top_k: int, per_video: int, moments: int = 3
) -> list[tuple[int, float, list[tuple[int, float]]]]:
    """From entries ranked best first: the top_k results with at most per_video from one video, each with the
    `moments` best entries of its video (entry, score)."""
    best_of: dict[str, list[tuple[int, float]]] = {}
    for entry, score in ranked:
        best_of.setdefault(videos[entry], []).append((entry, score))
    taken: dict[str, int] = {}
    out = []
    for entry, score in ranked:
        video = videos[entry]
        if taken.get(video, 0) >= per_video:
            continue
        taken[video] = taken.get(video, 0) + 1
        out.append((entry, score, best_of[video][:moments]))
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
