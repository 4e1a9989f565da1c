"""What the head computes on: text and video features, and the pair similarities before aggregation (shapes in the
package's alphabet: Q texts, V videos, T frames, L words, P phrases, C snippets, N fine units, D dims)."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tcmgc_cli.model.attention import LvaVideo
from tcmgc_cli.model.hierarchy import HierarchyDots


@dataclass
class TextFeatures:
    words: torch.Tensor  # (Q, L, D) W: projected features of every token position
    sentence: torch.Tensor  # (Q, D) s: projected feature at the end token
    mask: torch.Tensor | None = None  # (Q, L) bool, True up to the end token; None = no masking

    def select(self, idx: slice) -> "TextFeatures":
        return TextFeatures(self.words[idx], self.sentence[idx], None if self.mask is None else self.mask[idx])

    def float(self) -> "TextFeatures":
        """In float32 (features computed under bf16 autocast come out in bf16)."""
        return TextFeatures(self.words.float(), self.sentence.float(), self.mask)


@dataclass
class VideoFeatures:
    frames: torch.Tensor  # (V, T, D) X: CLIP frame features
    temporal: torch.Tensor  # (V, T, D) X': after the temporal encoder
    mask: torch.Tensor | None = None  # (V, T) bool real frames; None = all real
    lva: LvaVideo | None = None  # factorized LVA tensors, for retrieval

    def select(self, idx: slice) -> "VideoFeatures":
        mask = None if self.mask is None else self.mask[idx]
        return VideoFeatures(
            self.frames[idx], self.temporal[idx], mask, None if self.lva is None else self.lva.select(idx)
        )


@dataclass
class PairDots:
    """Cosine similarities of every pair, before SR and aggregation. N = fine-grained units (Nw, or T without LVA)."""

    vs: torch.Tensor  # (Q, V) (s^ G) . V^
    vw: torch.Tensor  # (Q, V, L) w^_i . V^
    sf: torch.Tensor  # (Q, V, N) s^ . F^_j
    fw: torch.Tensor  # (Q, V, L, N) (w^_i L) . F^_j
    vp: torch.Tensor | None = None  # (Q, V, P) p^ . V^ (phrases)
    pf: torch.Tensor | None = None  # (Q, V, P, N) (p^ L) . F^_j
    cs: torch.Tensor | None = None  # (Q, V, C) s^ . C^_k (snippets)
    cw: torch.Tensor | None = None  # (Q, V, L, C) (w^_i L) . C^_k
    cp: torch.Tensor | None = None  # (Q, V, P, C) (p^ L) . C^_k (phrases and snippets)
    h: HierarchyDots | None = None  # the hierarchy's three levels (hw, hp, hs)

    def get(self, name: str) -> torch.Tensor | None:
        """A similarity's dots by its code."""
        if name in ("hw", "hp", "hs"):
            return None if self.h is None else getattr(self.h, name)
        found: torch.Tensor | None = getattr(self, name)
        return found

    def add_units(self, prep: "PreparedText", v_hat: torch.Tensor, f_dot: Callable[[torch.Tensor], torch.Tensor],
                  c_hat: torch.Tensor | None) -> "PairDots":  # fmt: skip
        """The phrase and snippet similarities: v_hat the video vectors (Q, V, D) or (V, D); f_dot(probes (Q, P, D))
        -> their dots with the frame units (Q, V, P, N); c_hat the snippet vectors (Q, V, C, D) or (V, C, D)."""
        per_query = "qv" if v_hat.dim() == 3 else "v"
        if prep.p_hat is not None and prep.p_l is not None:
            self.vp = torch.einsum(f"qpd,{per_query}d->qvp", prep.p_hat, v_hat)
            self.pf = f_dot(prep.p_l)
        if c_hat is not None:
            snippets = f"{per_query}kd" if c_hat.dim() == 4 else "vkd"
            self.cs = torch.einsum(f"qd,{snippets}->qvk", prep.s_hat, c_hat)
            self.cw = torch.einsum(f"qid,{snippets}->qvik", prep.w_l, c_hat)
            if prep.p_l is not None:
                self.cp = torch.einsum(f"qpd,{snippets}->qvpk", prep.p_l, c_hat)
        return self


@dataclass
class PreparedText:
    """Text-side vectors, computed once per query and reused for every video block."""

    text: TextFeatures
    s_hat: torch.Tensor  # (Q, D) normalize(s)
    w_hat: torch.Tensor  # (Q, L, D) normalize(W)
    s_g: torch.Tensor  # (Q, D) s^ G
    w_l: torch.Tensor  # (Q, L, D) w^ L
    rows: torch.Tensor | None = None  # (Q, 2L+2, D) LVA queries and R-probes for the factorized path
    p_hat: torch.Tensor | None = None  # (Q, P, D) normalized phrases (means of consecutive token features)
    p_l: torch.Tensor | None = None  # (Q, P, D) p^ L


def phrase_means(words: torch.Tensor, size: int) -> torch.Tensor:
    """(Q, L, D) token features -> (Q, P, D) phrases: the mean of every `size` consecutive tokens (the last span
    may be shorter)."""
    q, length, d = words.shape
    pad = (-length) % size
    padded = F.pad(words, (0, 0, 0, pad))  # (Q, P * size, D)
    counts = torch.full((length + pad,), 1.0, device=words.device)
    counts[length:] = 0
    sums = padded.view(q, -1, size, d).sum(2)  # (Q, P * size, D) -> (Q, P, size, D) -> (Q, P, D)
    return sums / counts.view(-1, size).sum(1)[None, :, None]


def phrase_any(words: torch.Tensor, size: int) -> torch.Tensor:
    """(..., L) bool word mask -> (..., P): a phrase counts when one of its words does."""
    pad = (-words.shape[-1]) % size
    spans: torch.Tensor = F.pad(words, (0, pad)).unflatten(-1, (-1, size))  # type: ignore[no-untyped-call]
    return spans.any(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(V, T, D) -> (V, D): the mean over the slots `mask` (V, T) keeps (every slot when None)."""
    if mask is None:
        return x.mean(1)
    m = mask[..., None].to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


def as_bool_mask(mask: torch.Tensor) -> torch.Tensor:
    """A frame or word mask as booleans: bools as they are, 0/1 numbers (the reference's) compared with 0; any other
    value is an error, never silently misread (`~` on an integer mask gives -1 and -2, not False and True)."""
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"a mask must hold booleans or 0/1, got values {sorted(set(mask.flatten().tolist()))[:5]}")
    return mask != 0
