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
