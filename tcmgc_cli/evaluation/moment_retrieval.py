"""Moment retrieval evaluation: a QVHighlights-style file of queries with true windows, scored by a search index.

One query a line: {"qid", "query", "vid", "duration", "relevant_windows": [[start, end], ...]}. Each query is
answered twice: inside its video (`tcmgc search --video`: moment retrieval, moment_detr's metrics) and over the
whole collection (`tcmgc search`: video corpus moment retrieval). The corpus ranking is what `tcmgc search` lists,
read top to bottom: each result's moments, best first, result after result.

    from tcmgc_cli import evaluate_moments
    metrics = evaluate_moments(Path("sample_data/long/moments.jsonl"), cache=Path("scratch/long.h5"))
    metrics["R1@0.5"], metrics["corpus_R1@0.5"]
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcmgc_cli.defaults import CANDIDATES, DEVICE, PRECISION, SCORER
from tcmgc_cli.errors import AnnotationError
from tcmgc_cli.fileio import write_text_atomic
from tcmgc_cli.metrics import MAX_PREDICTIONS, moment_metrics
from tcmgc_cli.search import SearchIndex, open_search


@dataclass
class MomentQuery:
    qid: Any
    query: str
    vid: str
    duration: float
    windows: list[list[float]]  # true [start, end] seconds
    line: int


def read_moment_queries(path: Path, durations: dict[str, float], slack: float = 1.0) -> list[MomentQuery]:
    """The queries of a moments file, checked against the collection's videos and their durations (`slack` seconds
    of tolerance: decoders measure durations differently). Every problem is an AnnotationError naming its line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"cannot read --moments {path}: {err}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            out.append(_parse(line, n, path, durations, slack))
    if not out:
        raise AnnotationError(f"--moments {path} holds no queries (one JSON object a line).")
    return out


def _parse(line: str, n: int, path: Path, durations: dict[str, float], slack: float) -> MomentQuery:
    where = f"{path.name} line {n}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{where} is not JSON ({err.msg}): write one object a line.") from None
    missing = [k for k in ("qid", "query", "vid", "relevant_windows") if not isinstance(item, dict) or k not in item]
    if missing:
        raise AnnotationError(
            f"{where} has no {', '.join(missing)}: each line needs qid, query, vid, relevant_windows."
        )
    query, vid, windows = item["query"], str(item["vid"]), item["relevant_windows"]
    if not isinstance(query, str) or not query.strip():
        raise AnnotationError(f"{where}: the query is empty; write what happens in the moment.")
    if vid not in durations:
        raise AnnotationError(f"{where}: video {vid!r} is not in the cache; extract it, or fix the vid.")
    length = durations[vid]
    if not isinstance(windows, list) or not windows:
        raise AnnotationError(f"{where}: relevant_windows must be a non-empty list of [start, end] in seconds.")
    for w in windows:
        ok = isinstance(w, list) and len(w) == 2 and all(isinstance(x, int | float) for x in w)
        if not ok or not 0 <= w[0] < w[1] <= length + slack:
            raise AnnotationError(f"{where}: window {w} lies outside video {vid!r} (0 to {length:g} s) or is "
                                  "not [start, end] with start < end.")  # fmt: skip
    return MomentQuery(item["qid"], query, vid, float(item.get("duration", length)), windows, n)


def evaluate_moments(
    path: Path, checkpoint: Path | None = None, *, cache: Path | None = None, scorer: str = SCORER,
    pretrained: str | None = None, device: str = DEVICE, candidates: int = CANDIDATES,
    save_predictions: Path | None = None, precision: str = PRECISION,
) -> dict[str, Any]:  # fmt: skip
    """Moment metrics (`metrics.MOMENT_KEYS`, `num_queries`) of a checkpoint (or CLIP's own similarity) on a
    QVHighlights-style file; `save_predictions` writes each query's predicted windows in the same format."""
    index = open_search(checkpoint, cache, device, scorer, pretrained, precision=precision)
    return score_moments(index, path, candidates, save_predictions)


def score_moments(
    index: SearchIndex, path: Path, candidates: int = CANDIDATES, save_predictions: Path | None = None
) -> dict[str, Any]:
    c = index.collection
    queries = read_moment_queries(path, dict(zip(c.videos, c.durations.tolist(), strict=True)))
    text, _ = index.encode_queries([q.query for q in queries])
    inside, corpus, lines = [], [], []
    for n, q in enumerate(queries):
        one = text.select(slice(n, n + 1))
        hit = index.video_hit(one, q.vid, MAX_PREDICTIONS)
        inside.append([[m["start_sec"], m["end_sec"], m["score"]] for m in hit.moments])
        hits = index.search_features(one, top_k=MAX_PREDICTIONS, candidates=candidates)[0]
        corpus.append([(h.video_id, m["start_sec"], m["end_sec"]) for h in hits for m in h.moments])
        lines.append(json.dumps({"qid": q.qid, "query": q.query, "vid": q.vid, "pred_relevant_windows": inside[-1],
                                 "pred_corpus_windows": [[v, a, b] for v, a, b in corpus[-1][:MAX_PREDICTIONS]]}))  # fmt: skip
    metrics: dict[str, Any] = moment_metrics(inside, [q.windows for q in queries], corpus, [q.vid for q in queries])
    metrics["scorer"] = index.scorer
    if save_predictions is not None:
        write_text_atomic(save_predictions, "\n".join(lines) + "\n")
    return metrics
