"""A hierarchical interaction model beside TC-MGC's similarities (the paper's open question 3; docs/method.md,
section 17). Each side has three levels, formed bottom-up by merging adjacent units by their similarity, and each
text level interacts with the video level of the same rank:

    words (L)     x  first-level video units (N)  -> hw: Bi-SR and Bi-ISA over their cosine matrix
    phrases (P)   x  clips (C)                    -> hp: the same over the merged units
    sentence      x  video                        -> hs: their cosine

The video units are LVA's text-conditioned ones ("conditioned": the L word-conditioned pools and the
sentence-conditioned video) or the temporal encoder's text-agnostic ones ("agnostic": the T frames and their mean).
A merged unit is the normalized mean of a run of adjacent unit vectors, cut where neighbours are least alike
(`segments`). Everything above the first level follows from the first level's cosines and each side's Gram matrix (a
merged unit's dot with another is the sum of its members' dots over the norms of the two sums), so the factorized
retrieval path, which never forms a word-conditioned unit per pair, computes the same scores.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

FORCED_CUT = -3.0  # below any cosine: the cut between a unit that counts and one that does not comes first


@dataclass
class HierarchyDots:
    hw: torch.Tensor  # (Q, V, L, N) cosines of the words and the first-level video units
    hp: torch.Tensor  # (Q, V, P, C) cosines of the merged phrases and the merged clips
    hs: torch.Tensor  # (Q, V) the sentence's cosine with the video
    units_ok: torch.Tensor | None  # (Q|1, V|1, N) first-level video units that count; None: all
    phrases_ok: torch.Tensor | None  # (Q, 1, P) phrases holding a word that counts; None: all
    clips_ok: torch.Tensor | None  # (Q|1, V, C) clips holding a unit that counts; None: all


def segments(adjacent: torch.Tensor, parts: int, valid: torch.Tensor | None) -> torch.Tensor:
    """(..., n-1) cosines of neighbouring units -> (..., n) each unit's segment in [0, parts): cut at the parts - 1
    least similar neighbours (first where a unit that counts meets one that does not; ties: the earlier gap)."""
    n = adjacent.shape[-1] + 1
    if valid is not None:
        adjacent = adjacent.masked_fill(valid[..., 1:] != valid[..., :-1], FORCED_CUT)
    cuts = torch.sort(adjacent, dim=-1, stable=True).indices[..., : min(parts, n) - 1]  # (..., parts-1)
    boundary = torch.zeros(adjacent.shape, dtype=torch.long, device=adjacent.device).scatter_(-1, cuts, 1)
    return F.pad(boundary.cumsum(-1), (1, 0))  # (..., n-1) -> (..., n): unit 0 opens segment 0


def members(
    gram: torch.Tensor, parts: int, valid: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A side's merge from its Gram matrix (..., n, n): the members of each segment (..., n, parts) as 0/1 weights
    (units that do not count weigh 0), the norm of each segment's sum (..., parts), and which segments hold a unit that
    counts (..., parts) (None: all do, since no segment is empty)."""
    seg = segments(gram.diagonal(1, -2, -1), parts, valid)  # (..., n)
    weights = F.one_hot(seg, parts).to(gram.dtype)  # (..., n, parts)
    if valid is not None:
        weights = weights * valid[..., None].to(gram.dtype)
    squared = torch.einsum("...np,...nm,...mp->...p", weights, gram, weights)  # |sum of members|^2
    ok = None if valid is None else weights.sum(-2) > 0
    return weights, squared.clamp_min(1e-24).sqrt(), ok


def hierarchy_dots(
    w_hat: torch.Tensor,
    unit_dots: torch.Tensor,
    unit_gram: torch.Tensor,
    top: torch.Tensor,
    merge: int,
    words_ok: torch.Tensor | None,
    units_ok: torch.Tensor | None,
) -> HierarchyDots:
    """The three levels' cosines from the first level's: w_hat (Q, L, D) normalized words, unit_dots (Q, V, L, N)
    their cosines with the unit video vectors, unit_gram (Q|1, V, N, N) the units' Gram matrices, top (Q, V) the
    sentence's cosine with the video; words_ok (Q, L) and units_ok (Q|1, V|1, N) what counts (None: all)."""
    q, v, length, n = unit_dots.shape
    text_gram = w_hat @ w_hat.transpose(-1, -2)  # (Q, L, L)
    a_t, norm_t, phrases_ok = members(text_gram, math.ceil(length / merge), words_ok)  # (Q, L, P), (Q, P)
    units_valid = None if units_ok is None else units_ok.expand(unit_gram.shape[0], v, n)
    a_v, norm_v, clips_ok = members(unit_gram, math.ceil(n / merge), units_valid)  # (Q|1, V, N, C), (Q|1, V, C)
    sums = torch.einsum("qlp,qvln->qvpn", a_t, unit_dots) @ a_v.expand(q, -1, -1, -1)  # (Q, V, P, C)
    hp = sums / (norm_t[:, None, :, None] * norm_v.expand(q, -1, -1)[:, :, None, :])
    return HierarchyDots(unit_dots, hp, top, units_ok, None if phrases_ok is None else phrases_ok[:, None], clips_ok)


def agnostic(
    s_hat: torch.Tensor, w_hat: torch.Tensor, temporal: torch.Tensor, video: torch.Tensor, mask: torch.Tensor | None,
    merge: int, words_ok: torch.Tensor | None,
) -> HierarchyDots:  # fmt: skip
    """The text-agnostic inputs: the temporal encoder's frames (V, T, D), normalized, and video (V, D), their
    normalized mean over the frames that count (`mask` (V, T); None: all)."""
    units = F.normalize(temporal, dim=-1)  # (V, T, D)
    unit_dots = torch.einsum("qid,vjd->qvij", w_hat, units)  # (Q, V, L, T)
    gram = (units @ units.transpose(-1, -2))[None]  # (1, V, T, T)
    units_ok = None if mask is None else mask[None]  # (1, V, T)
    return hierarchy_dots(w_hat, unit_dots, gram, s_hat @ video.T, merge, words_ok, units_ok)


def conditioned(
    s_hat: torch.Tensor, w_hat: torch.Tensor, units: torch.Tensor, v_hat: torch.Tensor, merge: int,
    words_ok: torch.Tensor | None,
) -> HierarchyDots:  # fmt: skip
    """LVA's inputs, formed explicitly: units (Q, V, L, D) the word-conditioned pools, v_hat (Q, V, D) the
    sentence-conditioned video (both normalized). A pool counts where its word does."""
    unit_dots = torch.einsum("qid,qvjd->qvij", w_hat, units)  # (Q, V, L, L)
    gram = units @ units.transpose(-1, -2)  # (Q, V, L, L)
    top = torch.einsum("qd,qvd->qv", s_hat, v_hat)
    return hierarchy_dots(w_hat, unit_dots, gram, top, merge, words_ok, _pool_ok(words_ok))


def conditioned_factorized(
    s_hat: torch.Tensor, w_hat: torch.Tensor, unit_dots: torch.Tensor, coefficients: torch.Tensor,
    basis: torch.Tensor, v_hat: torch.Tensor, merge: int, words_ok: torch.Tensor | None,
) -> HierarchyDots:  # fmt: skip
    """LVA's inputs through the per-video tensors: each word-conditioned pool is coefficients (Q, V, L, B) over a
    per-video basis (V, B, D) (the frame keys' images, then the two constant vectors), so the pools' Gram matrix is
    coefficients x (basis x basis^T) x coefficients^T; unit_dots (Q, V, L, L) as `conditioned` computes them."""
    basis_gram = basis @ basis.transpose(-1, -2)  # (V, B, B)
    gram = coefficients @ basis_gram[None] @ coefficients.transpose(-1, -2)  # (Q, V, L, L)
    top = torch.einsum("qd,qvd->qv", s_hat, v_hat)
    return hierarchy_dots(w_hat, unit_dots, gram, top, merge, words_ok, _pool_ok(words_ok))


def _pool_ok(words_ok: torch.Tensor | None) -> torch.Tensor | None:
    return None if words_ok is None else words_ok[:, None]  # (Q, 1, L): a word's pool counts where the word does
