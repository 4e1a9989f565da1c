"""Scoring a dataset split with a trained model: texts and videos encoded once, the score matrix in blocks.

from tcmgc_cli.evaluate import evaluate
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
from tcmgc_cli.checkpoint import Trained, load_trained
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import CacheError, CheckpointError, ConfigError, NumericsError
from tcmgc_cli.metrics import dual_softmax, retrieval_metrics
from tcmgc_cli.model.encoder import Tokenizer
from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures
from tcmgc_cli.workspace import default_cache_path, latest_run


def check_cache(cache: FeatureCache, trained: Trained) -> None:
    """The cache must come from the encoder the model was trained on, with its number of frames."""
    settings = cache.settings
    if trained.visual_trained and not settings.store_frames:
        raise CacheError(
            f"the model's image tower was fine-tuned, so it needs frames: re-extract {cache.path} with --store-frames."
        )
    if (
        not trained.visual_trained
        and trained.encoder_fingerprint
        and settings.encoder_fingerprint != trained.encoder_fingerprint
    ):
        raise CacheError(
            f"{cache.path} was built by encoder {settings.encoder_fingerprint}, the checkpoint by "
            f"{trained.encoder_fingerprint}: extract with --model {trained.spec.name} into another --cache."
        )
    if settings.num_frames != trained.spec.config.num_frames:
        raise CacheError(
            f"{cache.path} holds {settings.num_frames} frames per video, the model expects "
            f"{trained.spec.config.num_frames}: re-extract with --num-frames {trained.spec.config.num_frames}."
        )


@torch.no_grad()
def encode_texts(
    model: TcmgcModel, tokenizer: Tokenizer, captions: list[str], device: torch.device, batch: int = 256
) -> TextFeatures:
    parts = [model.encode_text(tokenizer(captions[i : i + batch]).to(device)) for i in range(0, len(captions), batch)]
    masks = [p.mask for p in parts]
    mask = None if masks[0] is None else torch.cat([m for m in masks if m is not None])
    return TextFeatures(torch.cat([p.words for p in parts]), torch.cat([p.sentence for p in parts]), mask)


def frame_masks(cache: FeatureCache, ids: list[str], device: torch.device) -> torch.Tensor:
    """(V, T) bool: the slots of each entry that hold a real frame (False: zero padding)."""
    return torch.from_numpy(cache.frame_masks(ids)).to(device)


def encode_frames(model: TcmgcModel, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The model's image tower on uint8 frames (B, T, S, S, 3) -> (B, T, D); a padded slot (mask False) gets an
    all-zero normalized frame, as the reference's padding."""
    from tcmgc_cli.data.transforms import normalize

    b, t = frames.shape[:2]
    x = normalize(frames.flatten(0, 1), model.preprocess)  # (B*T, 3, S, S)
    if mask is not None:
        x = x * mask.flatten().to(x.dtype)[:, None, None, None]
    out: torch.Tensor = model.clip.visual(x).view(b, t, -1)  # (B*T, D) -> (B, T, D)
    return out


@torch.no_grad()
def frame_features(
    model: TcmgcModel, cache: FeatureCache, ids: list[str], device: torch.device, from_frames: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features X (V, T, D) of entries, and their masks of real frames (V, T): the cached features, or the
    model's own image tower on cached frames."""
    if not from_frames:
        feats, masks = cache.entry_inputs(ids)
        return torch.from_numpy(feats).to(device), torch.from_numpy(masks).to(device)
    mask = frame_masks(cache, ids, device)
    frames = [torch.from_numpy(cache.frames(vid)).to(device) for vid in ids]  # each (T, S, S, 3) uint8
    return torch.cat([encode_frames(model, f[None], mask[i : i + 1]) for i, f in enumerate(frames)]), mask


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
    text = encode_texts(model, trained.tokenizer, split.captions, dev)
    with torch.no_grad():
        frames, mask = frame_features(model, cache, split.video_ids, dev, trained.visual_trained)  # mask: real frames
        video = model.encode_video(frames, mask, factorized=True)  # temporal encoder and LVA tensors, once per video
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


def open_trained(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = "auto"
) -> tuple[Trained, FeatureCache, Path]:
    """The checkpoint (default: the newest run's best), the cache it reads (default: the workspace's cache for its
    model), checked against each other, and where the checkpoint came from."""
    source = checkpoint or latest_run()
    if source is None:
        raise CheckpointError("no trained run in the workspace: train one with `tcmgc train` or pass --checkpoint.")
    trained = load_trained(source, device)
    features = FeatureCache(cache or default_cache_path(trained.spec.name))
    check_cache(features, trained)
    return trained, features, source


def evaluate(
    source: DataSource, checkpoint: Path | None = None, *, split: str = "test", cache: Path | None = None,
    dsl: bool = False, chunk: int = 64, save_scores: Path | None = None, device: str = "auto",
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Retrieval metrics (`metrics.METRIC_KEYS`, ties, `num_queries`, `num_videos`, `pairs_per_s`, `checkpoint`)
    of a checkpoint on one split. Under torchrun every process scores a share and gets the same result."""
    if chunk < 1:
        raise ConfigError("--chunk must be at least 1.")
    trained, features, where = open_trained(checkpoint, cache, device)
    data = source.split(split, features)
    start = time.perf_counter()
    dist = Dist.from_env(trained.device)
    scores = score_split(trained, features, data, chunk, on_progress, dist=dist)
    seconds = time.perf_counter() - start
    if save_scores is not None and dist.rank == 0:
        np.savez_compressed(save_scores, scores=scores, video_ids=np.array(data.video_ids), captions=np.array(data.captions),
                            caption_video=np.array(data.caption_video))  # fmt: skip
    metrics: dict[str, Any] = metrics_for(scores, data, dsl)
    metrics["pairs_per_s"] = scores.size / seconds
    metrics["checkpoint"] = str(where)
    return metrics
