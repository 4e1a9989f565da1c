"""Finding moments: the best stretches of a video's track for a query, to the track's resolution.

Candidate windows of several lengths around the video's best entries are ranked by a cheap score (the mean
similarity of the sentence with the frames inside minus outside, the training-free TFVTG score); the best few are
scored in full by the ranker, each as an entry (its frames, padding and mask, through the temporal encoder), and
the best non-overlapping ones kept (non-maximum suppression). A query's full scoring is bounded: MOMENT_BUDGET
windows in all, shared among its results by rank.
"""

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.model.features import TextFeatures
from tcmgc_cli.search.collection import Collection
from tcmgc_cli.search.rankers import Ranker

MOMENT_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # candidate moment lengths, in track frames
MOMENT_BUDGET = 24  # candidate windows per query that the ranker scores in full (the rest only cheaply)

Moment = tuple[int, int, float]  # start frame, stop frame, score


def windows_of_lengths(lo: int, hi: int, lengths: Sequence[int], min_stride: int = 1) -> list[tuple[int, int]]:
    """Candidate windows [a, b) inside frames [lo, hi): every length in `lengths` that fits, starting every
    max(min_stride, length // 2) frames, the last one of each length ending at `hi`."""
    out: list[tuple[int, int]] = []
    for length in sorted(set(lengths)):
        if length < 1 or length > hi - lo:
            continue
        step = max(min_stride, length // 2)
        starts = [*range(lo, hi - length, step), hi - length]
        out.extend((a, a + length) for a in dict.fromkeys(starts))
    return out


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


def moment_budget(hits: int, total: int = MOMENT_BUDGET) -> list[int]:
    """Windows scored in full for each of `hits` results, best result first: shares of `total` falling with the
    rank (1/r, the top result matters most), at least 2 each."""
    weights = [1 / (r + 1) for r in range(hits)]
    return [max(2, round(total * w / sum(weights))) for w in weights]


@torch.no_grad()
def window_scores(
    ranker: Ranker, collection: Collection, text: TextFeatures, windows: list[tuple[int, int, int]], chunk: int = 256
) -> np.ndarray:
    """The ranker's scores (Q, n) of windows (video, start, stop) of tracks, each scored as an entry: its frames,
    padding and mask, through the temporal encoder."""
    parts = [np.zeros((len(text.sentence), 0), np.float32)]
    for i in range(0, len(windows), chunk):
        inputs = window_inputs(ranker, collection, windows[i : i + chunk], text.sentence.device)
        parts.append(ranker.scores(text, *inputs).float().cpu().numpy())
    return np.concatenate(parts, 1)


def find_moments(
    ranker: Ranker, collection: Collection, text: TextFeatures, videos: list[tuple[int, list[tuple[int, float]]]],
    refine: list[int], keep: int,
) -> list[list[Moment]]:  # fmt: skip
    """For one query and each (video, its best entries first with their scores): its `keep` best non-overlapping
    moments (start frame, stop frame, score), best first (`find_moments_batch` for one query)."""
    return find_moments_batch(ranker, collection, text, [videos], [refine], keep)[0]


@torch.no_grad()
def find_moments_batch(
    ranker: Ranker, collection: Collection, text: TextFeatures,
    videos: list[list[tuple[int, list[tuple[int, float]]]]], refine: list[list[int]], keep: int,
) -> list[list[list[Moment]]]:  # fmt: skip
    """`find_moments` for each query of `text` (Q) and its own videos: candidate windows of MOMENT_LENGTHS around a
    video's two best entries are ranked by `window_proxy`; the video's `refine[q][i]` best of them are scored in
    full, beside those entries (whose scores are known). The windows of all queries go through the temporal encoder
    together, once each (a window's temporal features do not depend on the query); each query then scores its own
    windows, so that its moments are those it gets alone."""
    plans = [_plan(collection, text.sentence[q], videos[q], refine[q]) for q in range(len(videos))]
    todo = [[(v, a, b) for (v, _), plan in zip(videos[q], plans[q], strict=True) for (a, b), s in plan.items()
             if s is None] for q in range(len(videos))]  # fmt: skip
    union = list(dict.fromkeys(w for windows in todo for w in windows))
    frames, temporal, mask = window_inputs(ranker, collection, union, text.sentence.device)
    place = {w: n for n, w in enumerate(union)}
    out = []
    for q, plan_q in enumerate(plans):
        idx = torch.tensor([place[w] for w in todo[q]], dtype=torch.long)
        one = text.select(slice(q, q + 1))
        got = ranker.scores(one, frames[idx], temporal[idx], mask[idx]) if len(idx) else torch.zeros(1, 0)
        scored = iter(got.float().cpu()[0].tolist())
        found = []
        for plan in plan_q:
            windows = list(plan)
            scores = [next(scored) if s is None else s for s in plan.values()]
            found.append([(*windows[i], scores[i]) for i in non_overlapping(windows, scores, keep)])
        out.append(found)
    return out


@torch.no_grad()
def window_inputs(
    ranker: Ranker, collection: Collection, windows: list[tuple[int, int, int]], device: torch.device, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames (n, T, D), temporal features (n, T, D) and masks (n, T) of windows (video, start, stop) of tracks, each
    as an entry (its frames, padding and mask, through the temporal encoder, `chunk` windows at a time), on
    `device`."""
    frames, mask = collection.inputs(windows)
    frames, mask = frames.to(device), mask.to(device)
    temporal = torch.cat([ranker.temporal(frames[i : i + chunk], mask[i : i + chunk])
                          for i in range(0, len(windows), chunk)]) if windows else frames  # fmt: skip
    return frames, temporal, mask


def _plan(
    c: Collection, sentence: torch.Tensor, videos: list[tuple[int, list[tuple[int, float]]]], refine: list[int]
) -> list[dict[tuple[int, int], float | None]]:
    """Each video's windows to consider: its `refine` best by the cheap score (None: to be scored in full) and its
    two best entries (their scores known)."""
    s = F.normalize(sentence.float().cpu(), dim=-1)  # (D,)
    plans: list[dict[tuple[int, int], float | None]] = []  # window -> its score, None until scored
    for (v, seeds), wanted in zip(videos, refine, strict=True):
        relevance = (F.normalize(c.track_frames(v), dim=-1) @ s).numpy()  # (n,)
        proxies = _proxies(c, v, seeds, relevance)
        best = sorted(proxies, key=lambda w: -proxies[w])[:wanted]  # stable: ties keep the candidates' order
        plan: dict[tuple[int, int], float | None] = dict.fromkeys(best)
        plan.update({(int(c.entry_start[e]), int(c.entry_stop[e])): score for e, score in seeds[:2]})
        plans.append(plan)
    return plans


def _proxies(
    c: Collection, v: int, seeds: list[tuple[int, float]], relevance: np.ndarray
) -> dict[tuple[int, int], float]:
    """The cheap score of every candidate window around a video's two best entries."""
    n = int(c.counts[v])
    proxies: dict[tuple[int, int], float] = {}
    for e, _ in seeds[:2]:
        a, b = int(c.entry_start[e]), int(c.entry_stop[e])
        margin = max(1, (b - a) // 4) if n > b - a else 0
        lo, hi = max(0, a - margin), min(n, b + margin)
        windows = windows_of_lengths(lo, hi, [m for m in MOMENT_LENGTHS if m <= max(b - a, c.num_frames)])
        for w, p in zip(windows, window_proxy(relevance, windows, lo, hi).tolist(), strict=True):
            proxies[w] = max(p, proxies.get(w, p))
    return proxies
