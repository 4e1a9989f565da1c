"""Retrieval evaluation: the score matrix of a split in blocks, and what is measured on it (metrics, speed, score
variance); `evaluate` is `tcmgc evaluate` as a library call. Training validates with `measure_split` every epoch.

    from tcmgc_cli import DataSource, evaluate
    metrics = evaluate(DataSource("msrvtt", Path("MSRVTT")))  # the newest run's best checkpoint, 1k-A test
    metrics["t2v_R@1"]
"""

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained, open_trained
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.defaults import DEVICE, EVAL_PRECISION
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import ConfigError, NumericsError
from tcmgc_cli.metrics import dual_softmax, retrieval_metrics
from tcmgc_cli.model.encoder import Tokenizer
from tcmgc_cli.model.features import TextFeatures
from tcmgc_cli.model.tcmgc import TcmgcModel
from tcmgc_cli.precision import autocast


@torch.no_grad()
def encode_texts(
    model: TcmgcModel, tokenizer: Tokenizer, captions: list[str], device: torch.device, batch: int = 256,
    precision: str = "fp32",
) -> TextFeatures:  # fmt: skip
    with autocast(device, precision):
        parts = [model.encode_text(tokenizer(captions[i : i + batch]).to(device)).float()
                 for i in range(0, len(captions), batch)]  # fmt: skip
    masks = [p.mask for p in parts]
    mask = None if masks[0] is None else torch.cat([m for m in masks if m is not None])
    return TextFeatures(torch.cat([p.words for p in parts]), torch.cat([p.sentence for p in parts]), mask)


@torch.no_grad()
def frame_features(
    model: TcmgcModel, cache: FeatureCache, ids: list[str], device: torch.device, from_frames: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features X (V, T, D) of entries, and their masks of real frames (V, T): the cached features, or the
    model's own image tower on cached frames."""
    feats, masks = cache.entry_inputs(ids)
    mask = torch.from_numpy(masks).to(device)
    if not from_frames:
        return torch.from_numpy(feats).to(device), mask
    frames = [torch.from_numpy(cache.frames(vid)).to(device) for vid in ids]  # each (T, S, S, 3) uint8
    return torch.cat([model.encode_frames(f[None], mask[i : i + 1]) for i, f in enumerate(frames)]), mask


def score_split(
    trained: Trained, cache: FeatureCache, split: Split, chunk: int = 64,
    on_progress: Callable[[int, int], None] | None = None, parts: list[torch.Tensor] | None = None,
    dist: Dist | None = None,
) -> np.ndarray:  # fmt: skip
    """The (texts, videos) score matrix of a split; with `parts`, also collects the (texts, videos, K) parts there.

    Under torchrun (`dist`), each process scores every world-th block of texts and every process gets the whole
    matrix back, assembled in order.
    """
    model, dev = trained.model, trained.device
    dist = dist or Dist()
    text = encode_texts(model, trained.tokenizer, split.captions, dev, precision=trained.precision)
    with torch.no_grad():
        frames, mask = frame_features(model, cache, split.video_ids, dev, trained.visual_trained)  # mask: real frames
        with autocast(dev, trained.precision):
            temporal = model.encode_video(frames, mask).temporal.float()
        video = model.head.video_features(frames, temporal, mask, factorized=True)  # LVA tensors, once per video
    q = len(split.captions)
    starts = list(range(0, q, chunk))
    mine: dict[int, np.ndarray] = {}
    for n, i in enumerate(starts[dist.rank :: dist.world]):
        out = model.score_chunked(text.select(slice(i, i + chunk)), video, chunk, chunk, parts=parts is not None)
        mine[i] = out["logits"].cpu().numpy()
        if parts is not None:
            parts.append(out["parts"].cpu())
        if on_progress:
            on_progress(min((n + 1) * chunk * dist.world, q), q)
    blocks = {i: b for shard in dist.gather_objects(mine) for i, b in shard.items()}
    scores = np.concatenate([blocks[i] for i in starts])
    check_finite_scores(scores, split.video_ids, split.captions)
    return scores


def check_finite_scores(scores: np.ndarray, video_ids: list[str], captions: list[str]) -> None:
    """NumericsError naming the videos (or texts) whose scores are NaN or infinite: such a score is never a rank."""
    bad = ~np.isfinite(scores)  # (Q, V)
    if not bad.any():
        return
    if bad.all():
        raise NumericsError(
            "every score is NaN or infinite: the checkpoint's weights are broken (a diverged run?); use another checkpoint."
        )
    bad_texts, bad_videos = np.flatnonzero(bad.all(1)), [video_ids[j] for j in np.flatnonzero(bad.any(0))]
    if bad_texts.size and len(bad_videos) == len(video_ids):
        raise NumericsError(
            f"{bad_texts.size} text(s) score NaN or infinity against every video (first: {captions[bad_texts[0]][:60]!r}): "
            "the checkpoint's text side is broken; use another checkpoint."
        )
    shown = ", ".join(bad_videos[:5]) + (f" and {len(bad_videos) - 5} more" if len(bad_videos) > 5 else "")
    raise NumericsError(
        f"{len(bad_videos)} video(s) score NaN or infinity ({shown}): their cached features or the model are broken. "
        "Rerun your `tcmgc extract` command with --verify."
    )


def score_variance(parts: torch.Tensor, caption_video: Sequence[int] | np.ndarray) -> float:
    """Mean over each text's positive pair of the unbiased variance of its K similarity scores (what SDR lowers)."""
    if parts.shape[-1] < 2:
        return 0.0
    positives = parts[torch.arange(len(caption_video)), torch.as_tensor(caption_video)]  # (Q, K)
    return float(positives.var(dim=-1, unbiased=True).mean())


def metrics_for(scores: np.ndarray, split: Split, dsl: bool = False) -> dict[str, float]:
    gt = np.asarray(split.caption_video)
    if not dsl:
        return retrieval_metrics(scores, gt)
    t2v = retrieval_metrics(dual_softmax(scores, axis=0), gt)
    v2t = retrieval_metrics(dual_softmax(scores, axis=1), gt)
    return {
        **{k: v for k, v in t2v.items() if not k.startswith("v2t")},
        **{k: v for k, v in v2t.items() if k.startswith("v2t")},
    }


def measure_split(
    trained: Trained, cache: FeatureCache, split: Split, chunk: int = 64, *, dsl: bool = False,
    variance: bool = True, on_progress: Callable[[int, int], None] | None = None, dist: Dist | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """Score a split, then its metrics (`metrics.METRIC_KEYS`, ties, sizes), its speed (`pairs_per_s`) and, with
    `variance`, the mean variance of the similarity scores on its positive pairs (`score_variance`, what SDR
    lowers). Returns the score matrix too."""
    parts: list[torch.Tensor] | None = [] if variance else None
    start = time.perf_counter()
    scores = score_split(trained, cache, split, chunk, on_progress, parts, dist)
    seconds = time.perf_counter() - start
    metrics: dict[str, Any] = metrics_for(scores, split, dsl)
    metrics["pairs_per_s"] = scores.size / seconds
    if parts is not None:
        metrics["score_variance"] = score_variance(torch.cat(parts), split.caption_video)
    return scores, metrics


def evaluate(
    source: DataSource, checkpoint: Path | None = None, *, split: str = "test", cache: Path | None = None,
    dsl: bool = False, chunk: int = 64, save_scores: Path | None = None, device: str = DEVICE,
    on_progress: Callable[[int, int], None] | None = None, precision: str = EVAL_PRECISION,
) -> dict[str, Any]:  # fmt: skip
    """Retrieval metrics (`metrics.METRIC_KEYS`, ties, `num_queries`, `num_videos`, `pairs_per_s`, `checkpoint`,
    `precision`) of a checkpoint on one split, computed in fp32 unless `precision` says otherwise (so that a
    checkpoint's numbers are the same on every host). Under torchrun every process scores a share and gets the same
    result."""
    if chunk < 1:
        raise ConfigError("--chunk must be at least 1.")
    trained, features, where = open_trained(checkpoint, cache, device, precision)
    data = source.split(split, features, features.path)
    dist = Dist.from_env(trained.device)
    scores, metrics = measure_split(trained, features, data, chunk, dsl=dsl, variance=False,
                                    on_progress=on_progress, dist=dist)  # fmt: skip
    if save_scores is not None and dist.rank == 0:
        np.savez_compressed(save_scores, scores=scores, video_ids=np.array(data.video_ids), captions=np.array(data.captions),
                            caption_video=np.array(data.caption_video))  # fmt: skip
    metrics["checkpoint"] = str(where)
    metrics["precision"] = trained.precision
    return metrics
