"""Where LVA's attention lands against where the caption happens (the paper's second check, `tcmgc evaluate
--moments FILE --attention`).

For each query of a moments file: the entry of its true video that best covers the true window (the most seconds of
it inside the entry's span; ties: the earlier entry), and the attention of the query's sentence and of each of its
words over that entry's frames (LVA's weights; a model without text conditioning, or the clip scorer: a softmax over
the frames' similarities, as `search --explain` draws). A frame is inside the window when its time t has
start <= t < end. Per query, over the entry's real frames (padded slots compete for LVA's attention, as in the
reference; the mass they take is reported apart and the rest renormalized):

- in span: the sentence's attention mass on frames inside the window; uniform: the share of the real frames inside
  (what attention spread evenly would give); their means over queries and the ratio of the means;
- word pointing: the share of the caption's words (tokens between start and end) whose most-attended real frame is
  inside, and its chance level (each word pointing at a random real frame: the uniform share, word-weighted).
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tcmgc_cli.model.features import TextFeatures
from tcmgc_cli.search import SearchIndex
from tcmgc_cli.search.explain import attention_of


@dataclass
class QueryAttention:
    """One query's attention over the real frames of its best-covering entry."""

    qid: Any
    query: str
    words: list[str]  # the caption's tokens, start and end left out
    sentence: np.ndarray  # (T',) the sentence's attention, renormalized over the real frames
    weights: np.ndarray  # (words, T') each word's, renormalized likewise
    times: np.ndarray  # (T',) the frames' times
    inside: np.ndarray  # (T',) bool: the frame lies in a true window
    padding_mass: float  # the sentence's attention on padded slots, before renormalizing

    @property
    def in_span(self) -> float:
        return float(self.sentence[self.inside].sum())

    @property
    def uniform(self) -> float:
        return float(self.inside.mean())

    @property
    def pointing(self) -> int:
        """Words whose most-attended frame is inside."""
        return int(self.inside[self.weights.argmax(1)].sum()) if len(self.words) else 0


def best_entry(index: SearchIndex, video: str, windows: list[list[float]]) -> int:
    """The entry of `video` holding the most seconds of the true windows (the earlier one on a tie)."""
    c = index.collection
    number = index.video_number(video)
    rows = c.entries_of(number)

    def covered(entry: int) -> float:
        begin, end = c.span(number, int(c.entry_start[entry]), int(c.entry_stop[entry]))
        return sum(max(0.0, min(end, b) - max(begin, a)) for a, b in windows)

    return int(max(rows.tolist(), key=lambda e: (covered(e), -e)))


def query_attention(
    index: SearchIndex, text: TextFeatures, qid: Any, query: str, video: str, windows: list[list[float]]
) -> QueryAttention:
    """The attention of one query (`text`: its features, one row) over its best-covering entry of `video`."""
    c, tok = index.collection, index.ranker.tokenizer
    entry = best_entry(index, video, windows)
    ids = tok([query])[0]
    end = int(ids.argmax())  # the end token's position
    words = [tok.decode_one(int(t)) for t in ids[1:end]]
    vectors = torch.cat([text.sentence[:1], text.words[0, 1:end]])  # (1 + words, D)
    weights = attention_of(index, vectors, [entry])[:, 0]  # (1 + words, T)
    real = c.masks(torch.tensor([entry]))[0].numpy()
    times = c.entry_times(entry)[real]
    inside = np.array([any(a <= t < b for a, b in windows) for t in times], dtype=bool)
    kept = weights[:, real]
    mass = kept.sum(1, keepdims=True)  # (1 + words, 1) attention on real frames
    shares = kept / np.maximum(mass, 1e-12)
    return QueryAttention(qid, query, words, shares[0], shares[1:], times, inside, max(0.0, float(1 - mass[0, 0])))


def attention_metrics(items: list[QueryAttention], source: str) -> dict[str, Any]:
    """The check's figures over queries whose entry holds a frame inside the window (the others are counted)."""
    used = [a for a in items if a.inside.any()]
    words = sum(len(a.words) for a in used)
    in_span = float(np.mean([a.in_span for a in used])) if used else 0.0
    uniform = float(np.mean([a.uniform for a in used])) if used else 0.0
    return {
        "attention_in_span": in_span,
        "attention_uniform": uniform,
        "attention_ratio": in_span / uniform if uniform else 0.0,
        "word_pointing": sum(a.pointing for a in used) / words if words else 0.0,
        "word_pointing_chance": sum(len(a.words) * a.uniform for a in used) / words if words else 0.0,
        "attention_on_padding": float(np.mean([a.padding_mass for a in used])) if used else 0.0,
        "attention_queries": len(used),
        "attention_skipped": len(items) - len(used),
        "attention_source": source,
    }


def example(a: QueryAttention) -> dict[str, Any]:
    """One query's picture as plain data: its words' attention over the entry's real frames and which are inside."""
    return {"qid": a.qid, "query": a.query, "words": a.words, "weights": a.weights.round(4).tolist(),
            "sentence": a.sentence.round(4).tolist(), "times": a.times.tolist(), "inside": a.inside.tolist()}  # fmt: skip


def attention_source(index: SearchIndex) -> str:
    """Which attention the check reads: LVA's, or a softmax over frame similarities."""
    lva = index.scorer == "tcmgc" and index.trained.model.head.lva is not None
    return "lva" if lva else "frame similarities"
