"""The TC-MGC model: CLIP towers plus the text-conditioned multi-grained head.

Where the work goes. Text features (W, s) are computed once per query and video features (temporal encoder, then
the factorized LVA tensors of `attention.py`) once per video. Only the cross-modal part runs per (text, video) pair:
the LVA attention weights (they depend on both), the dot products of text probes with the pooled videos, SR's sorting
and the small ISA/LSA aggregations. Training scores all B x B pairs of a batch through the direct (readable) LVA with
dropout; retrieval scores Q x V in chunks through the factorized LVA, so no pooled D-vector is ever formed per pair
and peak memory is bounded by the chunk size.
"""

import math
from typing import Any

import torch
from torch import nn

from tcmgc_cli.config import ModelConfig
from tcmgc_cli.model.features import TextFeatures, VideoFeatures
from tcmgc_cli.model.head import TcmgcHead


class TcmgcModel(nn.Module):
    """CLIP (an open_clip model) plus the TC-MGC head, with the training and the chunked retrieval paths."""

    clip: Any  # an open_clip CLIP (untyped library)
    preprocess: Any = None  # the image tower's Preprocess, set by the factory

    def __init__(self, cfg: ModelConfig, clip: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.clip = clip
        self.head = TcmgcHead(cfg)

    @property
    def tau(self) -> torch.Tensor:
        """CLIP's logit scale exp(t), capped at cfg.logit_scale_max."""
        tau: torch.Tensor = self.clip.logit_scale.clamp(max=math.log(self.cfg.logit_scale_max)).exp()
        return tau

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        """tokens (Q, L) -> W (Q, L, D), s (Q, D), and the word mask when mask_padding is on."""
        from tcmgc_cli.model.encoder import encode_tokens

        words, sentence = encode_tokens(self.clip, tokens)
        mask = None
        if self.cfg.mask_padding:
            eot = tokens.argmax(-1, keepdim=True)  # (Q, 1)
            mask = torch.arange(tokens.shape[1], device=tokens.device)[None] <= eot
        return TextFeatures(words, sentence, mask)

    def encode_frames(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own image tower on uint8 frames (B, T, S, S, 3) -> (B, T, D); a padded slot (mask False)
        holds the padding feature (`encoder.encode_pixels`)."""
        from tcmgc_cli.model.encoder import encode_pixels

        b, t = frames.shape[:2]
        real = None if mask is None else mask.flatten()
        return encode_pixels(self.clip.visual, self.preprocess, frames.flatten(0, 1), real).view(
            b, t, -1
        )  # (B*T, D) -> (B, T, D)

    def padding_feature(self) -> torch.Tensor:
        """(D,) what a padded slot holds, through the model's own image tower."""
        size = self.preprocess.size
        device = next(self.parameters()).device
        blank = torch.zeros(1, 1, size, size, 3, dtype=torch.uint8, device=device)
        return self.encode_frames(blank, torch.zeros(1, 1, dtype=torch.bool, device=device))[0, 0]

    def encode_video(
        self, frames: torch.Tensor, mask: torch.Tensor | None = None, factorized: bool = False
    ) -> VideoFeatures:
        return self.head.encode_video(frames, mask, factorized)

    def forward(self, text: TextFeatures, video: VideoFeatures) -> dict[str, torch.Tensor]:
        """Training path over all pairs: {"logits": (Q, V), "parts": (Q, V, K)}."""
        dots = self.head.dots(self.head.prepare_text(text, factorized=False), video, factorized=False)
        parts = self.head.similarities(dots, text, video, self.tau)
        return {"logits": self.head.aggregation(parts), "parts": parts}

    @torch.no_grad()
    def score_chunked(
        self,
        text: TextFeatures,
        video: VideoFeatures,
        chunk_texts: int = 64,
        chunk_videos: int = 64,
        parts: bool = False,
        factorized: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Retrieval path: the (Q, V) score matrix block by block, through the factorized LVA by default.

        `video` must come from encode_video(..., factorized=True) when text conditioning is on. factorized=False runs
        the direct LVA per block instead (the reference's way; for comparisons).
        """
        q, v = text.sentence.shape[0], video.temporal.shape[0]
        logits = torch.empty(q, v, device=text.sentence.device)
        all_parts = torch.empty(q, v, len(self.cfg.active_similarities), device=logits.device) if parts else None
        for i in range(0, q, chunk_texts):
            t_chunk = text.select(slice(i, i + chunk_texts))
            prep = self.head.prepare_text(t_chunk, factorized)
            for j in range(0, v, chunk_videos):
                v_chunk = video.select(slice(j, j + chunk_videos))
                dots = self.head.dots(prep, v_chunk, factorized=factorized)
                g = self.head.similarities(dots, t_chunk, v_chunk, self.tau)
                logits[i : i + chunk_texts, j : j + chunk_videos] = self.head.aggregation(g)
                if all_parts is not None:
                    all_parts[i : i + chunk_texts, j : j + chunk_videos] = g
        out = {"logits": logits}
        if all_parts is not None:
            out["parts"] = all_parts
        return out


def head_parameter_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of each new module at the config's sizes (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        head = TcmgcHead(cfg)
    groups = {
        "temporal": "temporal.",
        "lva": "lva.",
        "G": "global_mat_weight",
        "L": "local_mat_weight",
        "isa": "isa_",
        "lsa": "aggregation.",
    }
    counts = {
        name: sum(p.numel() for n, p in head.named_parameters() if n.startswith(prefix))
        for name, prefix in groups.items()
    }
    counts["total"] = sum(p.numel() for p in head.parameters())
    return counts
