"""Language-Video Attention (LVA): one pooled video vector per (query, video) pair, and its exact factorization.

Direct form (the method doc, section 4), for query q and video frames X' (T, D):
    x~ = LN1(X'),  a = softmax_f(LN1(q) . x~_f / sqrt(D)),  p = sum_f a_f x~_f
    out = normalize(LN3(p' + Dropout(W p' + b))),  p' = LN2(p)

Factorized form. p is a convex combination of per-frame vectors, and LayerNorm is an affine map up to two per-vector
scalars (mean and scale), so everything after the attention weights folds into per-video tensors:
    c_f = x~_f - mean(x~_f)                 LN2 centring:      C p = sum_f a_f c_f,     var = a' K a / D, K = c c'
    Z_f = (I + W)(g2 * c_f),  z0 = (I + W) b2 + b            h = p' + W p' + b = sum_f u_f Z_f + z0,   u = a / s2
    Y_f = C Z_f,  y0 = C z0                  LN3 centring:      C h = sum_f u_f Y_f + y0, |C h|^2 from Y Y', Y y0, y0.y0
    R_f = g3 * Y_f,  r0 = g3 * y0            out = sum_f w_f R_f + c r0 + b3,   w = u / s3,  c = 1 / s3
|out|^2 follows from the Gram matrix R R' and the vectors R r0, R b3; a probe's dot product q . out from q . R_f.
R_f = M x~_f for one D x D matrix M (`frame_map`), so q . R_f = (q M) . x~_f: the probes share the attention's
keys, and one GEMM per block serves both. The D x D linear layer and both LayerNorms thus run once per video frame
(`precompute`) instead of once per pair and query; a pair costs its attention weights, T x T quadratic forms and
small products. Dropout is the only part that does not factor; it is off at inference, so retrieval uses this path
and training the direct one. Equality with the direct form is tested to 1e-5.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LvaVideo:
    """Per-video tensors of the factorized LVA (V videos, T frames, D dims)."""

    keys: torch.Tensor  # (V, T, D) x~ = LN1(X'), the attention keys; R = x~ M' for the frame map M
    r: torch.Tensor  # (V, T, D) R
    stats: torch.Tensor  # (V, T, 3T + 3) [c c' | Y Y' | R R' | Y y0 | R r0 | R b3]
    mask: torch.Tensor | None  # (V, T) bool, None = all frames real
    consts: tuple[torch.Tensor, ...]  # shared by all videos: y0.y0, r0.r0, r0.b3, b3.b3, r0 (D,), b3 (D,)

    @staticmethod
    def cat(parts: "list[LvaVideo]") -> "LvaVideo":
        """The tensors of consecutive groups of videos (same model) as one."""
        masks = [p.mask for p in parts]
        mask = None if any(m is None for m in masks) else torch.cat(masks)  # type: ignore[arg-type]
        return LvaVideo(torch.cat([p.keys for p in parts]), torch.cat([p.r for p in parts]),
                        torch.cat([p.stats for p in parts]), mask, parts[0].consts)  # fmt: skip

    def select(self, idx: slice | torch.Tensor) -> "LvaVideo":
        """The same tensors for a slice of the videos, or for the videos at the given indices."""
        mask = None if self.mask is None else self.mask[idx]
        return LvaVideo(self.keys[idx], self.r[idx], self.stats[idx], mask, self.consts)


@dataclass
class Pooled:
    """LVA's pooled vectors in factorized form: out = (sum_f w_f R_f + c r0 + b3) * inv_norm is normalized."""

    w: torch.Tensor  # (Q, V, K, T) frame weights
    c: torch.Tensor  # (Q, V, K) weight of r0
    inv_norm: torch.Tensor  # (Q, V, K) 1 / |out|


class LanguageVideoAttention(nn.Module):
    """LVA: parameter-free single-head attention on LayerNorm outputs, then LN2 -> residual linear -> LN3."""

    def __init__(self, dim: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(dim)
        self.layer_norm2 = nn.LayerNorm(dim)
        self.layer_norm3 = nn.LayerNorm(dim)
        self.linear_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.linear_proj.weight, std=0.02)
        nn.init.zeros_(self.linear_proj.bias)

    def weights(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """queries (Q, K, D) raw, keys (V, T, D) = LN1(X') -> attention weights (Q, K, V, T)."""
        q = self.layer_norm1(queries)
        logits = torch.einsum("qkd,vtd->qkvt", q, keys) / math.sqrt(q.shape[-1])
        if mask is not None:
            logits = logits.masked_fill(~mask[None, None], float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Direct form. queries (Q, K, D), frames X' (V, T, D) -> normalized pooled vectors (Q, K, V, D)."""
        keys = self.layer_norm1(frames)
        a = self.weights(queries, keys, mask)
        p = self.layer_norm2(torch.einsum("qkvt,vtd->qkvd", a, keys))
        out = self.layer_norm3(p + self.dropout(self.linear_proj(p)))
        return F.normalize(out, dim=-1)

    def frame_map(self) -> torch.Tensor:
        """M (D, D) with R_f = M x~_f: LN2's centring and scale, the residual linear layer, LN3's centring and scale."""
        d = self.linear_proj.weight.shape[0]
        eye = torch.eye(d, device=self.linear_proj.weight.device)
        center = eye - 1.0 / d
        return (
            (self.layer_norm3.weight[:, None] * center)
            @ (eye + self.linear_proj.weight)
            @ (self.layer_norm2.weight[:, None] * center)
        )

    def precompute(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> LvaVideo:
        """Per-video tensors of the factorized form; frames X' (V, T, D)."""
        ln2, ln3, lin = self.layer_norm2, self.layer_norm3, self.linear_proj
        keys = self.layer_norm1(frames)
        c = keys - keys.mean(-1, keepdim=True)  # (V, T, D)
        e = c * ln2.weight
        z = e + F.linear(e, lin.weight)  # (I + W) e: (V, T, D)
        z0 = ln2.bias + lin(ln2.bias)  # (I + W) b2 + b: (D,)
        y, y0 = z - z.mean(-1, keepdim=True), z0 - z0.mean()
        r, r0, b3 = y * ln3.weight, y0 * ln3.weight, ln3.bias

        def gram(a: torch.Tensor) -> torch.Tensor:  # (V, T, D) -> (V, T, T)
            return a @ a.transpose(-1, -2)

        vecs = torch.stack([y @ y0, r @ r0, r @ b3], dim=-1)  # (V, T, 3)
        stats = torch.cat([gram(c), gram(y), gram(r), vecs], dim=-1)  # (V, T, 3T + 3)
        return LvaVideo(keys, r, stats, mask, (y0 @ y0, r0 @ r0, r0 @ b3, b3 @ b3, r0, b3))

    def pool(self, logits: torch.Tensor, video: LvaVideo) -> Pooled:
        """Attention logits (Q, V, K, T), already scaled by 1/sqrt(D) -> the pooled vectors in factorized form."""
        y0y0, r0r0, r0b3, b3b3, _, _ = video.consts
        if video.mask is not None:
            logits = logits.masked_fill(~video.mask[None, :, None, :], float("-inf"))
        a = (logits - logits.amax(-1, keepdim=True)).exp()  # a softmax over T; torch's kernel is slow for short rows
        a = a / a.sum(-1, keepdim=True)  # (Q, V, K, T)
        t, dim = a.shape[-1], video.keys.shape[-1]
        proj = torch.einsum("qvkt,vts->qvks", a, video.stats)  # (Q, V, K, 3T + 3): one GEMM per video
        quad = (proj[..., : 3 * t].view(*proj.shape[:-1], 3, t) * a[..., None, :]).sum(-1)  # a'Ga for the 3 Grams
        qc, qy, qr = quad.unbind(-1)
        ly, lr0, lb3 = proj[..., 3 * t :].unbind(-1)
        s2 = torch.sqrt(qc / dim + self.layer_norm2.eps)
        ch2 = qy / s2**2 + 2 * ly / s2 + y0y0
        s3 = torch.sqrt(ch2.clamp_min(0) / dim + self.layer_norm3.eps)
        k, c = 1.0 / (s2 * s3), 1.0 / s3  # w = k a
        norm2 = qr * k**2 + 2 * c * k * lr0 + 2 * k * lb3 + c * c * r0r0 + 2 * c * r0b3 + b3b3
        return Pooled(a * k[..., None], c, torch.rsqrt(norm2.clamp_min(1e-24)))
