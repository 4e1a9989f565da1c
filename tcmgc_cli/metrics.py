"""Retrieval metrics as the papers report them, with ties defined strictly (method doc, section 11).

rank = number of candidates scoring strictly higher than the ground truth (0-based). R@K = 100 * mean(rank < K),
MdR = median(rank) + 1, MnR = mean(rank) + 1. Every query counts once; queries whose ground truth is tied with
another candidate are counted in `*_tied`.
"""

import numpy as np

from tcmgc_cli.errors import NumericsError

KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")
METRIC_KEYS = tuple(f"{d}_{k}" for d in ("t2v", "v2t") for k in KEYS)  # the keys of every metrics dict and JSON


def gt_ranks(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int]:
    """scores (N, M), gt (N,) column of each row's ground truth -> ranks (N,) and the number of tied rows."""
    truth = scores[np.arange(len(gt)), gt][:, None]  # (N, 1)
    ranks = (scores > truth).sum(1)
    tied = int(((scores == truth).sum(1) > 1).sum())
    return ranks, tied


def _summary(prefix: str, ranks: np.ndarray, tied: int) -> dict[str, float]:
    out = {f"{prefix}_R@{k}": float(100.0 * np.mean(ranks < k)) for k in (1, 5, 10)}
    out[f"{prefix}_MdR"] = float(np.median(ranks) + 1)
    out[f"{prefix}_MnR"] = float(np.mean(ranks) + 1)
    out[f"{prefix}_tied"] = tied
    return out


def retrieval_metrics(scores: np.ndarray, caption_video: np.ndarray) -> dict[str, float]:
    """scores (Q texts, V videos); caption_video (Q,) each text's video. Text-to-video and video-to-text.

    With several captions per video, video-to-text scores a video against each caption group by the group's
    maximum, giving a (V, V) matrix whose diagonal is the ground truth.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise NumericsError("scores hold NaN or infinity: ranks of such scores are meaningless, so none are reported.")
    caption_video = np.asarray(caption_video)
    q, v = scores.shape
    t2v = _summary("t2v", *gt_ranks(scores, caption_video))
    if q == v and np.array_equal(caption_video, np.arange(v)):
        v2t_scores = scores.T
    else:
        v2t_scores = np.full((v, v), -np.inf)
        for group in range(v):
            rows = scores[caption_video == group]  # (captions of `group`, V)
            if len(rows):
                v2t_scores[:, group] = rows.max(0)
    v2t = _summary("v2t", *gt_ranks(v2t_scores, np.arange(v)))
    return {**t2v, **v2t, "num_queries": q, "num_videos": v}


def dual_softmax(scores: np.ndarray, axis: int) -> np.ndarray:
    """Inference-time dual softmax (DSL): rescale each score by its softmax over the other direction's axis."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    prior = np.exp(shifted)
    result: np.ndarray = scores * prior / prior.sum(axis=axis, keepdims=True)
    return result


# ---- moments ------------------------------------------------------------------------------------------------------
# Moment retrieval inside a video as moment_detr's standalone evaluation (QVHighlights) defines it, and the same
# query over a whole collection (video corpus moment retrieval). Windows are [start, end] in seconds.
MOMENT_KEYS = ("R1@0.5", "R1@0.7", "mAP@0.5", "mAP@0.75", "mAP", "corpus_R1@0.5", "corpus_R1@0.7", "corpus_R10@0.5")
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95
MAX_PREDICTIONS = 10  # predicted windows per query that count


def temporal_iou(a: tuple[float, float] | list[float], b: tuple[float, float] | list[float]) -> float:
    """Intersection over union of two windows (0 when they do not overlap)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def best_iou(window: list[float], truth: list[list[float]]) -> float:
    """IoU of a window with the true window it overlaps most (0 with none)."""
    return max((temporal_iou(window, t) for t in truth), default=0.0)


def average_precision(predicted: list[list[float]], truth: list[list[float]], threshold: float) -> float:
    """AP of one query's predictions [start, end, score] (best first by score; ties keep their order) at one IoU
    threshold: each prediction is a true positive when a true window not yet taken overlaps it by at least the
    threshold (the one it overlaps most first); VOC's interpolated area under the precision-recall curve."""
    if not predicted or not truth:
        return 0.0
    ranked = sorted(predicted, key=lambda p: -p[2])
    taken: set[int] = set()
    hits = []
    for p in ranked:
        ious = [temporal_iou(p, t) for t in truth]
        match = next((j for j in sorted(range(len(truth)), key=lambda j: -ious[j])
                      if ious[j] >= threshold and j not in taken), None)  # fmt: skip
        if match is not None:
            taken.add(match)
        hits.append(match is not None)
    tp = np.cumsum(hits, dtype=np.float64)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / len(truth)
    p_env = np.concatenate([[0.0], precision, [0.0]])
    r_env = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(p_env) - 2, -1, -1):  # the precision envelope: best precision at this recall or beyond
        p_env[i] = max(p_env[i], p_env[i + 1])
    steps = np.flatnonzero(r_env[1:] != r_env[:-1]) + 1
    return float(np.sum((r_env[steps] - r_env[steps - 1]) * p_env[steps]))


def moment_metrics(
    predicted: list[list[list[float]]], truth: list[list[list[float]]],
    corpus: list[list[tuple[str, float, float]]] | None = None, videos: list[str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Per query: predicted windows [start, end, score] inside its video, true windows [start, end]; optionally its
    ranked corpus results (video, start, end) and its video. Percentages, as the field reports them."""
    n = len(truth)
    out: dict[str, float] = {"num_queries": n}
    if not n:
        return out
    preds = [sorted(p, key=lambda w: -w[2])[:MAX_PREDICTIONS] for p in predicted]
    top = [best_iou(p[0][:2], t) if p else 0.0 for p, t in zip(preds, truth, strict=True)]
    for thr in (0.5, 0.7):
        out[f"R1@{thr}"] = 100.0 * float(np.mean([iou >= thr for iou in top]))
    ap = np.array([[average_precision(p, t, thr) for thr in IOU_THRESHOLDS] for p, t in zip(preds, truth, strict=True)])
    out["mAP@0.5"], out["mAP@0.75"] = 100.0 * float(ap[:, 0].mean()), 100.0 * float(ap[:, 5].mean())
    out["mAP"] = 100.0 * float(ap.mean())
    if corpus is not None and videos is not None:
        right = [[best_iou([a, b], t) if vid == want else 0.0 for vid, a, b in ranked[:MAX_PREDICTIONS]]
                 for ranked, want, t in zip(corpus, videos, truth, strict=True)]  # fmt: skip
        for thr in (0.5, 0.7):
            out[f"corpus_R1@{thr}"] = 100.0 * float(np.mean([bool(r) and r[0] >= thr for r in right]))
        out["corpus_R10@0.5"] = 100.0 * float(np.mean([any(iou >= 0.5 for iou in r) for r in right]))
    return out
