"""Two-stage text-to-video search over a cache with a trained model.

Stage 1 (coarse): one matrix product of the normalized sentence features with one vector per video (the normalized
mean of its temporal-encoder frames), over the whole collection. Stage 2: full TC-MGC scoring of each query's top
`candidates` through the factorized path. The temporal encoder runs once per video when the index is built; the
factorized LVA tensors are computed for the candidates only.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache, segment_dir
from tcmgc_cli.checkpoint import Trained, find_checkpoint, load_verified, save_verified
from tcmgc_cli.errors import CheckpointError, ConfigError, NumericsError
from tcmgc_cli.evaluate import frame_features
from tcmgc_cli.model.tcmgc import TextFeatures, VideoFeatures


@dataclass
class Hit:
    rank: int
    video_id: str
    score: float
    path: str
    start_sec: float  # the span of frames the query attends to most
    end_sec: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "video_id": self.video_id, "score": round(self.score, 6), "path": self.path,
                "start_sec": round(self.start_sec, 3), "end_sec": round(self.end_sec, 3)}  # fmt: skip


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


class SearchIndex:
    """The videos of a cache prepared for one trained model."""

    def __init__(
        self, trained: Trained, ids: list[str], frames: torch.Tensor, temporal: torch.Tensor,
        paths: list[str], times: list[np.ndarray],
    ) -> None:  # fmt: skip
        self.trained, self.ids, self.paths, self.times = trained, ids, paths, times
        self.frames = frames  # (V, T, D) CLIP frame features
        self.temporal = temporal  # (V, T, D) after the temporal encoder
        self.coarse = F.normalize(temporal.mean(1), dim=-1).half()  # (V, D) float16: 1 KB a video at D = 512

    @classmethod
    def from_cache(cls, trained: Trained, cache: FeatureCache, batch: int = 512) -> "SearchIndex":
        """Run the temporal encoder once over every cached video (features kept in float16, as when saved)."""
        ids = cache.ids()
        frames, temporal = [], []
        with torch.no_grad():
            for i in range(0, len(ids), batch):
                x = frame_features(trained.model, cache, ids[i : i + batch], trained.device, trained.visual_trained)
                frames.append(x.half())  # (B, T, D)
                temporal.append(trained.model.encode_video(x).temporal.half())
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in cache.load_rows(ids, "paths")]
        times = list(cache.load_rows(ids, "timestamps"))  # each (T,) seconds
        return cls(trained, ids, torch.cat(frames).float(), torch.cat(temporal).float(), paths, times)

    def save(self, path: Path, key: str) -> None:
        """Write the index atomically; `key` identifies the checkpoint and cache state it was built from."""
        payload = {"key": key, "ids": self.ids, "paths": self.paths, "times": torch.from_numpy(np.stack(self.times)),
                   "frames": self.frames.half(), "temporal": self.temporal.half()}  # fmt: skip
        save_verified(payload, path)

    @classmethod
    def load(cls, trained: Trained, path: Path, key: str) -> "SearchIndex | None":
        """The saved index if it is intact and was built from the same checkpoint and cache state, else None."""
        try:
            payload = load_verified(path)
        except CheckpointError:
            return None
        if not isinstance(payload, dict) or payload.get("key") != key:
            return None
        times = list(payload["times"].numpy())
        return cls(
            trained, payload["ids"], payload["frames"].float(), payload["temporal"].float(), payload["paths"], times
        )

    def __len__(self) -> int:
        return len(self.ids)

    def encode_queries(self, queries: list[str]) -> tuple[TextFeatures, list[str]]:
        """Text features, and a note for each query cut to the text encoder's context."""
        empty = [i for i, q in enumerate(queries) if not q.strip()]
        if empty:
            raise ConfigError(f'query {empty[0] + 1} is empty: write a few words, e.g. tcmgc search "a dog runs".')
        tok = self.trained.tokenizer
        notes = [
            f"query {i + 1} ({_shorten(q)}) is longer than {tok.length - 2} tokens: only its start is used"
            for i, q in enumerate(queries)
            if tok.truncated(q)
        ]
        with torch.no_grad():
            text = self.trained.model.encode_text(tok(queries).to(self.trained.device))
        return text, notes

    def search(self, queries: list[str], top_k: int = 10, candidates: int = 500) -> tuple[list[list[Hit]], list[str]]:
        """Hits for each query, and notes about queries that were cut."""
        text, notes = self.encode_queries(queries)
        return self.search_features(text, top_k, candidates), notes

    @torch.no_grad()
    def shortlist(self, text: TextFeatures, candidates: int) -> torch.Tensor:
        """Coarse stage: the `candidates` best videos per query by sentence . video vector, (Q, C)."""
        return coarse_topk(self.coarse, F.normalize(text.sentence, dim=-1), candidates)

    @torch.no_grad()
    def search_features(self, text: TextFeatures, top_k: int = 10, candidates: int = 500) -> list[list[Hit]]:
        if top_k < 1 or candidates < 1:
            raise ConfigError("--top-k and --candidates must be at least 1.")
        shortlist = self.shortlist(text, max(candidates, top_k))
        return [self._rerank(text.select(slice(q, q + 1)), shortlist[q], top_k) for q in range(len(shortlist))]

    def _video(self, idx: torch.Tensor) -> VideoFeatures:
        model = self.trained.model
        temporal = self.temporal[idx]
        lva = model.head.lva.precompute(temporal) if model.head.lva is not None else None
        return VideoFeatures(self.frames[idx], temporal, None, lva)

    @torch.no_grad()
    def full_scores(self, text: TextFeatures, idx: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        """TC-MGC scores (Q, len(idx)) of the given videos."""
        out = [self.trained.model.score_chunked(text, self._video(idx[i : i + chunk]), 64, chunk)["logits"]
               for i in range(0, len(idx), chunk)]  # fmt: skip
        return torch.cat(out, dim=1)

    def _rerank(self, text: TextFeatures, idx: torch.Tensor, top_k: int) -> list[Hit]:
        scores = self.full_scores(text, idx)[0]  # (C,)
        bad = idx[~torch.isfinite(scores)].tolist()
        if bad:
            names = ", ".join(self.ids[v] for v in bad[:5])
            raise NumericsError(
                f"{len(bad)} video(s) score NaN or infinity ({names}): their cached features or the checkpoint are "
                "broken. Rerun your `tcmgc extract` command with --verify, or use another checkpoint."
            )
        order = scores.argsort(descending=True)[:top_k]
        top = idx[order]
        weights = self.attention(text, top)  # (k, T)
        hits = []
        for rank, (v, s) in enumerate(zip(top.tolist(), scores[order].tolist(), strict=True), start=1):
            times = self.times[v]
            start, end = attended_span(weights[rank - 1], times, float(times[-1]) + self._step(times))
            hits.append(Hit(rank, self.ids[v], s, self.paths[v], start, end))
        return hits

    @staticmethod
    def _step(times: np.ndarray) -> float:
        steps = np.diff(np.unique(times))
        return float(np.median(steps)) if len(steps) else 1.0

    def attention(self, text: TextFeatures, idx: torch.Tensor) -> np.ndarray:
        """How one query's sentence spreads over each video's frames: LVA's weights, else frame similarities."""
        model = self.trained.model
        if model.head.lva is not None:
            keys = model.head.lva.layer_norm1(self.temporal[idx])
            a = model.head.lva.weights(text.sentence[:, None], keys, None)[0, 0]  # (V, T)
        else:
            sims = F.normalize(self.frames[idx], dim=-1) @ F.normalize(text.sentence[0], dim=-1)  # (V, T)
            a = torch.softmax(model.cfg.isa_lambda * sims, dim=-1)
        return a.cpu().numpy()

    def word_attention(self, query: str, video_id: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """For --explain: the words of a query, their attention over the video's frames (words, T), frame times."""
        if video_id not in self.ids:
            raise ConfigError(f"video {video_id!r} is not in the cache: pick one from the results.")
        v = self.ids.index(video_id)
        text, _ = self.encode_queries([query])
        tok = self.trained.tokenizer
        ids = tok([query])[0]
        n = int(ids.argmax()) + 1  # up to the end token
        words = [tok.decode_one(int(t)) for t in ids[:n]]
        model = self.trained.model
        with torch.no_grad():
            if model.head.lva is not None:
                keys = model.head.lva.layer_norm1(self.temporal[v : v + 1])
                a = model.head.lva.weights(text.words[:, :n], keys, None)[0, :, 0]  # (n, T)
            else:
                sims = F.normalize(text.words[0, :n], dim=-1) @ F.normalize(self.frames[v], dim=-1).T
                a = torch.softmax(model.cfg.isa_lambda * sims, dim=-1)
        return words, a.cpu().numpy(), self.times[v]


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


def open_search(checkpoint: Path | None = None, cache: Path | None = None, device: str = "auto") -> SearchIndex:
    """The search index of a checkpoint (default: the newest run) over a cache (default: the workspace's for its
    model), ready for `search(["a dog runs"])`."""
    from tcmgc_cli.errors import CacheError
    from tcmgc_cli.evaluate import open_trained

    trained, features, source = open_trained(checkpoint, cache, device)
    if len(features) == 0:
        raise CacheError(
            f"{features.path} holds no videos: run `tcmgc extract --videos DIR --model {trained.spec.name}`."
        )
    return open_index(trained, source, features)
