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

from tcmgc_cli.defaults import CANDIDATES, DEVICE, EVAL_PRECISION, SCORER
from tcmgc_cli.errors import AnnotationError
from tcmgc_cli.evaluation import attention as check
from tcmgc_cli.fileio import write_text_atomic
from tcmgc_cli.metrics import MAX_PREDICTIONS, moment_metrics
from tcmgc_cli.options import EngineConfig
from tcmgc_cli.search import SearchIndex, open_search

EXAMPLES = 6  # queries whose attention `attention_examples` keeps (the picture's panels)


@dataclass
class MomentQuery:
    qid: Any
    query: str
    vid: str
    duration: float | None  # seconds, as the file says (None: not given)
    windows: list[list[float]]  # true [start, end] seconds
    line: int


def read_moment_queries(path: Path) -> list[MomentQuery]:
    """The queries of a moments file, read before any model loads; every problem is an AnnotationError naming its
    line and the fix (`check_against` then checks them against the collection)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise AnnotationError(
            f"--moments {path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8."
        ) from None
    except OSError as err:
        raise AnnotationError(f"cannot read --moments {path}: {err.strerror or err}.") from None
    out = [_parse(line, n, path) for n, line in enumerate(lines, 1) if line.strip()]
    if not out:
        raise AnnotationError(f"--moments {path} holds no queries (one JSON object a line).")
    return out


def _parse(line: str, n: int, path: Path) -> MomentQuery:
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
    query, windows = item["query"], item["relevant_windows"]
    if not isinstance(query, str) or not query.strip():
        raise AnnotationError(f"{where}: the query is empty; write what happens in the moment.")
    ok = isinstance(windows, list) and windows and all(
        isinstance(w, list) and len(w) == 2 and all(isinstance(x, int | float) for x in w) and 0 <= w[0] < w[1]
        for w in windows
    )  # fmt: skip
    if not ok:
        raise AnnotationError(f"{where}: relevant_windows must be a non-empty list of [start, end] in seconds, "
                              "0 <= start < end.")  # fmt: skip
    duration = item.get("duration")
    return MomentQuery(item["qid"], query, str(item["vid"]), None if duration is None else float(duration), windows, n)


def check_against(queries: list[MomentQuery], durations: dict[str, float], path: Path, slack: float = 1.0) -> None:
    """Each query's video is in the collection and its windows inside it (`slack` seconds of tolerance: decoders
    measure durations differently)."""
    for q in queries:
        where = f"{path.name} line {q.line}"
        if q.vid not in durations:
            raise AnnotationError(f"{where}: video {q.vid!r} is not in the cache; extract it, or fix the vid.")
        length = durations[q.vid]
        outside = [w for w in q.windows if w[1] > length + slack]
        if outside:
            raise AnnotationError(f"{where}: window {outside[0]} lies outside video {q.vid!r} (0 to {length:g} s).")


def evaluate_moments(
    path: Path, checkpoint: Path | None = None, *, cache: Path | None = None, scorer: str = SCORER,
    pretrained: str | None = None, device: str = DEVICE, candidates: int = CANDIDATES,
    save_predictions: Path | None = None, precision: str = EVAL_PRECISION, engine: EngineConfig | None = None,
    attention: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Moment metrics (`metrics.MOMENT_KEYS`, `num_queries`) of a checkpoint (or CLIP's own similarity) on a
    QVHighlights-style file; `save_predictions` writes each query's predicted windows in the same format. engine:
    where the coarse stage runs (default: the built-in index). attention: also where the attention lands against the
    true windows (`evaluation/attention.py`: its figures, and `attention_examples`, the first queries' pictures)."""
    queries = read_moment_queries(path)  # a bad file is refused before any model loads
    index = open_search(checkpoint, cache, device, scorer, pretrained, precision=precision, engine=engine, sync=False)
    return score_moments(index, path, candidates, save_predictions, queries, attention)


def score_moments(
    index: SearchIndex, path: Path, candidates: int = CANDIDATES, save_predictions: Path | None = None,
    queries: list[MomentQuery] | None = None, attention: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """`evaluate_moments` over an open index (`queries`: the file's, when already read)."""
    c = index.collection
    queries = read_moment_queries(path) if queries is None else queries
    check_against(queries, dict(zip(c.videos, c.durations.tolist(), strict=True)), path)
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
    metrics["notes"] = index.notes
    metrics["precision"] = index.trained.precision if index.scorer == "tcmgc" else "fp32"  # CLIP's towers: fp32
    if save_predictions is not None:
        write_text_atomic(save_predictions, "\n".join(lines) + "\n")
    if attention:
        items = [check.query_attention(index, text.select(slice(n, n + 1)), q.qid, q.query, q.vid, q.windows)
                 for n, q in enumerate(queries)]  # fmt: skip
        metrics |= check.attention_metrics(items, check.attention_source(index))
        metrics["attention_examples"] = [check.example(a) for a in items[:EXAMPLES]]
    return metrics
