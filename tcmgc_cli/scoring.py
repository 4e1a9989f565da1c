"""Scoring, shared by evaluate, train, search and ablate: a checkpoint and the cache it reads, text and frame
features, the score matrix of a split in blocks, and what is measured on it (metrics, speed, score variance).

    trained, cache, where = open_trained(Path("runs/my-run"))
    scores, metrics = measure_split(trained, cache, split)
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained, load_trained
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import CacheError, CheckpointError, NumericsError
from tcmgc_cli.metrics import dual_softmax, retrieval_metrics
from tcmgc_cli.model.encoder import Tokenizer
from tcmgc_cli.model.factory import ModelSpec
from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures
from tcmgc_cli.precision import autocast
from tcmgc_cli.workspace import default_cache_path, latest_run


def check_cache(cache: FeatureCache, spec: ModelSpec, *, needs_frames: bool, fingerprint: str = "") -> None:
    """One line for a cache a model cannot read: frames missing when its image tower runs (fine-tuned, or training
    end to end), another encoder (by `fingerprint` when the checkpoint recorded one, else by model name), or
    another number of frames."""
    settings = cache.settings
    if needs_frames and not settings.store_frames:
        raise CacheError(
            f"the image tower runs on frames here (fine-tuned, or trained end to end), and {cache.path} holds only "
            "features: re-extract with --store-frames into another --cache (to train, --freeze-backbone needs none)."
        )
    if not needs_frames and fingerprint and settings.encoder_fingerprint != fingerprint:
        raise CacheError(
            f"{cache.path} was built by encoder {settings.encoder_fingerprint}, the checkpoint by "
            f"{fingerprint}: extract with --model {spec.name} into another --cache."
        )
    if not needs_frames and not fingerprint and settings.encoder != spec.name:
        raise CacheError(f"{cache.path} was extracted with --model {settings.encoder}, this run uses {spec.name}: "
                         f"extract with --model {spec.name}.")  # fmt: skip
    if settings.num_frames != spec.config.num_frames:
        raise CacheError(
            f"{cache.path} holds {settings.num_frames} frames per video, {spec.name} expects "
            f"{spec.config.num_frames}: re-extract with --num-frames {spec.config.num_frames} into another --cache, "
            "or --set model.num_frames=..."
        )


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


def open_trained(
    checkpoint: Path | None = None, cache: Path | None = None, device: str = "auto", precision: str = "auto"
) -> tuple[Trained, FeatureCache, Path]:
    """The checkpoint (default: the newest run's best), the cache it reads (default: the workspace's cache for its
    model), checked against each other, and where the checkpoint came from."""
    source = checkpoint or latest_run()
    if source is None:
        raise CheckpointError("no trained run in the workspace: train one with `tcmgc train` or pass --checkpoint.")
    trained = load_trained(source, device)
    features = FeatureCache(cache or default_cache_path(trained.spec.name))
    if trained.visual_trained and tower_fingerprint(trained) == features.settings.encoder_fingerprint:
        trained = dataclasses.replace(trained, visual_trained=False)  # its tower is the cache's: the features are it
    check_cache(features, trained.spec, needs_frames=trained.visual_trained, fingerprint=trained.encoder_fingerprint)
    return dataclasses.replace(trained, precision=model_precision(trained, precision)), features, source


def model_precision(trained: Trained, precision: str) -> str:
    """fp32 or bf16 for the text tower and temporal encoder: as asked, or the faster one on this host ("auto")."""
    from tcmgc_cli.precision import resolve

    model, dev, cfg = trained.model, trained.device, trained.spec.config
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 1000, (8, cfg.max_words), generator=gen).to(dev)
    frames = torch.randn(8, cfg.num_frames, cfg.embed_dim, generator=gen).to(dev)

    @torch.no_grad()
    def run(p: str) -> torch.Tensor:
        with autocast(dev, p):
            sentence = model.encode_text(tokens).sentence
            temporal = model.encode_video(frames).temporal.mean(1)
        return torch.cat([sentence.float(), temporal.float()], -1)  # (8, 2D)

    return resolve(precision, f"text and temporal {trained.spec.name} ({trained.spec.clip})", dev, run)


def tower_fingerprint(trained: Trained) -> str:
    """The fingerprint `tcmgc extract` records for an image tower with these weights (fp32)."""
    from tcmgc_cli.model.encoder import module_fingerprint

    return f"{trained.spec.clip}:{module_fingerprint(trained.model.clip.visual)}"


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
