"""The scorers a search index ranks with: a trained TC-MGC model, or CLIP's own similarity (no training).

A ranker turns queries into text features, sees each track's frames its own way (a fine-tuned image tower encodes
the cached frames again), runs its temporal encoder over entries once (the index keeps the result and each entry's
coarse vector, `encode_entries`), and scores queries against entries. Moments are scored by the same ranker on
windows of a track.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache, video_entries
from tcmgc_cli.cache.entries import gather, layout
from tcmgc_cli.checkpoint import Trained
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.encoder import TextEncoder, Tokenizer, encode_tokens
from tcmgc_cli.model.features import TextFeatures, VideoFeatures
from tcmgc_cli.precision import autocast


class Ranker(Protocol):
    """What a scorer brings to a search index."""

    name: str  # "tcmgc" or "clip"
    tokenizer: Tokenizer
    keeps_temporal: bool  # whether `temporal` computes something (kept in the index) or returns the frames
    reads_frames: bool  # whether `scores` reads `frames` besides `temporal` (else any tensor of their shape does)
    needs_pixels: bool  # whether `frame_features` encodes the tracks' stored frames (a fine-tuned image tower)

    @property
    def device(self) -> torch.device: ...

    def encode(self, tokens: torch.Tensor) -> TextFeatures: ...

    def frame_features(self, features: dict[str, np.ndarray], pixels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each video's track as this ranker sees frames, (n, D) float32, from its cached features (n, D) and, when
        `needs_pixels`, its stored frames (n, S, S, 3) uint8."""
        ...

    def padding(self, cached: np.ndarray) -> np.ndarray:
        """What a padded slot holds for this ranker (D,), given the cache's padding feature."""
        ...

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features, (B, T) real frames -> (B, T, D) the features the coarse vectors and scores read."""
        ...

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Q queries' full scores against C entries: frames, temporal (C, T, D), mask (C, T) -> (Q, C); `lva`: the
        entries' LVA tensors from `lva_tensors`, when kept (else computed here)."""
        ...

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        """The per-entry tensors that scoring would compute for every query, to keep (None: there are none)."""
        ...

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """How each query vector (n, D) spreads over the frames of E entries (E, T, D) -> (n, E, T), summing to 1."""
        ...


class TcmgcRanker:
    name = "tcmgc"
    keeps_temporal = True

    def __init__(self, trained: Trained) -> None:
        self.trained, self.tokenizer = trained, trained.tokenizer
        self.reads_frames = not trained.model.cfg.text_conditioning  # X-CLIP's frame similarities read them
        self.needs_pixels = trained.visual_trained

    @property
    def device(self) -> torch.device:
        return self.trained.device

    def encode(self, tokens: torch.Tensor) -> TextFeatures:
        with autocast(self.trained.device, self.trained.precision):
            return self.trained.model.encode_text(tokens.to(self.trained.device)).float()

    @torch.no_grad()
    def frame_features(self, features: dict[str, np.ndarray], pixels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The cached features; a model whose image tower was fine-tuned encodes the stored frames itself."""
        if not self.needs_pixels:
            return features
        model, dev = self.trained.model, self.trained.device
        frames = {v: torch.from_numpy(p).to(dev)[None] for v, p in pixels.items()}  # (1, n, S, S, 3) each
        return {v: model.encode_frames(f)[0].float().cpu().numpy() for v, f in frames.items()}

    @torch.no_grad()
    def padding(self, cached: np.ndarray) -> np.ndarray:
        if not self.needs_pixels:
            return cached
        return self.trained.model.padding_feature().float().cpu().numpy()

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with autocast(self.trained.device, self.trained.precision):
            return self.trained.model.encode_video(frames, mask).temporal.float()

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        model = self.trained.model
        lva_mask = mask if model.cfg.mask_padding else None  # LVA sees padded frames unless asked (method doc 4)
        lva = self.lva_tensors(temporal, mask) if lva is None else lva
        video = VideoFeatures(frames, temporal, lva_mask, lva)
        out: torch.Tensor = model.score_chunked(text, video, 64, len(frames))["logits"]
        return out

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        model = self.trained.model
        if model.head.lva is None:
            return None
        dev = self.trained.device
        return model.head.lva.precompute(temporal.to(dev), mask.to(dev) if model.cfg.mask_padding else None)

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        """LVA's attention weights, else (no text conditioning) softmax frame similarities."""
        model = self.trained.model
        if model.head.lva is not None:
            keys = model.head.lva.layer_norm1(temporal)  # (E, T, D)
            return model.head.lva.weights(queries[:, None], keys, None)[:, 0]  # (n, 1, E, T) -> (n, E, T)
        sims = torch.einsum("nd,etd->net", F.normalize(queries, dim=-1), F.normalize(frames, dim=-1))
        return torch.softmax(model.cfg.isa_lambda * sims, dim=-1)


class ClipRanker:
    """CLIP's own similarity: sentence . normalized mean of the frames; moments from sentence . each frame."""

    name = "clip"
    keeps_temporal = False
    reads_frames = True
    needs_pixels = False

    def __init__(self, text: TextEncoder, sharpness: float = 100.0) -> None:
        self.text, self.tokenizer, self.sharpness = text, text.tokenizer, sharpness

    @property
    def device(self) -> torch.device:
        return self.text.device

    def frame_features(self, features: dict[str, np.ndarray], pixels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return features

    def padding(self, cached: np.ndarray) -> np.ndarray:
        return cached

    def encode(self, tokens: torch.Tensor) -> TextFeatures:
        words, sentence = encode_tokens(self.text.clip, tokens.to(self.text.device))
        return TextFeatures(words, sentence)

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return frames

    def scores(
        self, text: TextFeatures, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor,
        lva: LvaVideo | None = None,
    ) -> torch.Tensor:  # fmt: skip
        m = mask[..., None].to(frames.dtype)  # (C, T, 1): the mean of the real frames
        mean = (frames * m).sum(1) / m.sum(1).clamp_min(1)
        return F.normalize(text.sentence, dim=-1) @ F.normalize(mean, dim=-1).T  # (Q, C)

    def lva_tensors(self, temporal: torch.Tensor, mask: torch.Tensor) -> LvaVideo | None:
        return None

    def attention(self, queries: torch.Tensor, frames: torch.Tensor, temporal: torch.Tensor) -> torch.Tensor:
        sims = torch.einsum("nd,etd->net", F.normalize(queries, dim=-1), F.normalize(frames, dim=-1))  # (n, E, T)
        return torch.softmax(self.sharpness * sims, dim=-1)


@dataclass
class EncodedTrack:
    """What a ranker computed for one video's track and its entries."""

    video: str
    times: np.ndarray  # (n,) float64 frame start seconds
    frames: np.ndarray  # (n, D) float32 the track's frames as the ranker sees them
    temporal: np.ndarray  # (e, T, D) float16 each entry's temporal-encoder output (the frames for CLIP)
    coarse: np.ndarray  # (e, D) float16 each entry's coarse vector (the first stage's shortlist reads these)


def coarse_vectors(temporal: torch.Tensor, mask: torch.Tensor, whole: bool) -> torch.Tensor:
    """(B, T, D) -> (B, D) float16: the normalized mean of every slot's temporal feature (TC-MGC's first stage), or,
    for CLIP (`whole` False), of the real frames only, which is CLIP's own score up to float16."""
    if whole:
        return F.normalize(temporal.float().mean(1), dim=-1).half()
    m = mask[..., None].to(torch.float32)
    return F.normalize((temporal.float() * m).sum(1) / m.sum(1).clamp_min(1), dim=-1).half()


@torch.no_grad()
def encode_entries(ranker: Ranker, cache: FeatureCache, videos: list[str], batch: int = 512) -> Iterator[EncodedTrack]:
    """The tracks of `videos` as `ranker` sees them, and their entries' temporal features and coarse vectors,
    video by video in the order given (entries run through the temporal encoder `batch` at a time)."""
    if not videos:
        return
    rule = cache.settings.tracks
    tracks = cache.tracks(videos)
    pixels = {v: cache.track_pixels(v) for v in videos} if ranker.needs_pixels else {}
    feats = ranker.frame_features({v: f for v, (_, f) in tracks.items()}, pixels)
    pad = ranker.padding(cache.padding_feature)
    entries = {v: video_entries(v, len(tracks[v][0]), rule) for v in videos}
    inputs, masks = [], []
    for v in videos:
        es = entries[v]
        rows = layout(np.array([e.start for e in es]), np.array([e.stop for e in es]), np.zeros(len(es)),
                      rule.num_frames, rule.padding)  # (e, T) rows of the track  # fmt: skip
        x, m = gather(np.asarray(feats[v], np.float32), rows, pad)  # (e, T, D), (e, T)
        inputs.append(x)
        masks.append(m)
    x_all, m_all = np.concatenate(inputs), np.concatenate(masks)  # (E, T, D), (E, T)
    temporal, coarse = [], []
    for i in range(0, len(x_all), batch):
        frames = torch.from_numpy(x_all[i : i + batch]).to(ranker.device)  # (B, T, D)
        real = torch.from_numpy(m_all[i : i + batch]).to(ranker.device)  # (B, T)
        out = ranker.temporal(frames, real)
        temporal.append(out.half().cpu().numpy())
        coarse.append(coarse_vectors(out, real, ranker.keeps_temporal).cpu().numpy())
    temporal_all, coarse_all = np.concatenate(temporal), np.concatenate(coarse)
    at = 0
    for v in videos:
        n = len(entries[v])
        yield EncodedTrack(v, tracks[v][0], np.asarray(feats[v], np.float32), temporal_all[at : at + n],
                           coarse_all[at : at + n])  # fmt: skip
        at += n
