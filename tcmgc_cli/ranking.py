"""The scorers a search index ranks with: a trained TC-MGC model, or CLIP's own similarity (no training).

A ranker turns queries into text features, runs its temporal encoder over entries once (the index keeps the
result), and scores queries against entries. Moments are scored by the same ranker on windows of a track.
"""

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import Trained
from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.encoder import TextEncoder, Tokenizer, encode_tokens
from tcmgc_cli.model.tcmgc import TextFeatures, VideoFeatures
from tcmgc_cli.precision import autocast


class Ranker(Protocol):
    """What a scorer brings to a search index."""

    name: str  # "tcmgc" or "clip"
    tokenizer: Tokenizer
    keeps_temporal: bool  # whether `temporal` computes something (kept in the index) or returns the frames
    reads_frames: bool  # whether `scores` reads `frames` besides `temporal` (else any tensor of their shape does)

    @property
    def device(self) -> torch.device: ...

    def encode(self, tokens: torch.Tensor) -> TextFeatures: ...

    def frame_features(self, cache: FeatureCache, videos: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each video's track as this ranker sees frames, (n, D) float32, and what a zero-padded slot holds (D,)."""
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

    @property
    def device(self) -> torch.device:
        return self.trained.device

    def encode(self, tokens: torch.Tensor) -> TextFeatures:
        with autocast(self.trained.device, self.trained.precision):
            return self.trained.model.encode_text(tokens.to(self.trained.device)).float()

    @torch.no_grad()
    def frame_features(self, cache: FeatureCache, videos: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The cached features; a model whose image tower was fine-tuned encodes the cached frames itself."""
        if not self.trained.visual_trained:
            return {v: f for v, (_, f) in cache.tracks(videos).items()}, cache.padding_feature
        from tcmgc_cli.scoring import encode_frames

        model, dev = self.trained.model, self.trained.device
        size = cache.settings.image_size
        pad = encode_frames(model, torch.zeros(1, 1, size, size, 3, dtype=torch.uint8, device=dev), None)[0, 0]
        out = {}
        for video in videos:
            pixels = torch.from_numpy(cache.track_pixels(video)).to(dev)  # (n, S, S, 3)
            out[video] = encode_frames(model, pixels[None], None)[0].float().cpu().numpy()
        return out, pad.float().cpu().numpy()

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

    def __init__(self, text: TextEncoder, sharpness: float = 100.0) -> None:
        self.text, self.tokenizer, self.sharpness = text, text.tokenizer, sharpness

    @property
    def device(self) -> torch.device:
        return self.text.device

    def frame_features(self, cache: FeatureCache, videos: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        return {v: f for v, (_, f) in cache.tracks(videos).items()}, cache.padding_feature

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
