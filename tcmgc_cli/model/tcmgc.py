"""The TC-MGC model: CLIP towers plus the text-conditioned multi-grained head.

Where the work goes. Text features (W, s) are computed once per query and video features (temporal encoder, then
the factorized LVA tensors of `attention.py`) once per video. Only the cross-modal part runs per (text, video) pair:
the LVA attention weights (they depend on both), the dot products of text probes with the pooled videos, SR's sorting
and the small ISA/LSA aggregations. Training scores all B x B pairs of a batch through the direct (readable) LVA with
dropout; retrieval scores Q x V in chunks through the factorized LVA, so no pooled D-vector is ever formed per pair
and peak memory is bounded by the chunk size.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tcmgc_cli.config import ModelConfig
from tcmgc_cli.model.aggregate import ISA, Aggregation
from tcmgc_cli.model.attention import LanguageVideoAttention, LvaVideo
from tcmgc_cli.model.reorganize import bi_keep, by_mass, keep, keep_and_fuse, top_values
from tcmgc_cli.model.temporal import TemporalEncoder


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
    cs: torch.Tensor | None = None  # (Q, V, C) s^ . C^_k (clips)
    cw: torch.Tensor | None = None  # (Q, V, L, C) (w^_i L) . C^_k
    cp: torch.Tensor | None = None  # (Q, V, P, C) (p^ L) . C^_k (phrases and clips)

    def add_units(self, prep: "PreparedText", v_hat: torch.Tensor, f_dot: Callable[[torch.Tensor], torch.Tensor],
                  c_hat: torch.Tensor | None) -> "PairDots":  # fmt: skip
        """The phrase and clip similarities: v_hat the video vectors (Q, V, D) or (V, D); f_dot(probes (Q, P, D))
        -> their dots with the frame units (Q, V, P, N); c_hat the clip vectors (Q, V, C, D) or (V, C, D)."""
        per_query = "qv" if v_hat.dim() == 3 else "v"
        if prep.p_hat is not None and prep.p_l is not None:
            self.vp = torch.einsum(f"qpd,{per_query}d->qvp", prep.p_hat, v_hat)
            self.pf = f_dot(prep.p_l)
        if c_hat is not None:
            clips = f"{per_query}kd" if c_hat.dim() == 4 else "vkd"
            self.cs = torch.einsum(f"qd,{clips}->qvk", prep.s_hat, c_hat)
            self.cw = torch.einsum(f"qid,{clips}->qvik", prep.w_l, c_hat)
            if prep.p_l is not None:
                self.cp = torch.einsum(f"qpd,{clips}->qvpk", prep.p_l, c_hat)
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


class TcmgcHead(nn.Module):
    """Everything TC-MGC adds on top of CLIP: temporal encoder, LVA, G, L, the ISA matrices and LSA."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, sims = cfg.embed_dim, cfg.active_similarities

        def isa(size: int) -> ISA:
            return ISA(size, cfg.isa_lambda, cfg.isa_form)

        self.temporal = TemporalEncoder(d, cfg.temporal_layers, cfg.temporal_heads, cfg.temporal_positions)
        self.lva = LanguageVideoAttention(d, cfg.lva_dropout) if cfg.text_conditioning else None
        self.global_mat_weight = nn.Parameter(torch.eye(d)) if "vs" in sims else None  # G
        matrix = any(UNITS[name][2] == "matrix" for name in sims)
        self.local_mat_weight = nn.Parameter(torch.eye(d)) if matrix else None  # L, for every text-unit probe
        for name in sims:  # A1 (vw), A2 (sf), B1-B4 (fw), and the same for the phrase and clip similarities
            t_unit, v_unit, kind = UNITS[name]
            k_t, k_v = self.kept(t_unit), self.kept(v_unit)
            if kind == "text":
                setattr(self, f"isa_{name}", isa(k_t))
            elif kind == "video":
                setattr(self, f"isa_{name}", isa(k_v + 1 if cfg.reorganize else k_v))
            elif kind == "matrix":
                setattr(self, f"isa_{name}_words", isa(k_t))  # over text units, per video-unit column
                setattr(self, f"isa_{name}_frames", isa(k_v))  # over video units, per text-unit row
                setattr(self, f"isa_{name}_u", isa(k_v))
                setattr(self, f"isa_{name}_z", isa(k_t))
        self.aggregation = Aggregation(len(sims), cfg.aggregation)

    def units(self, unit: str) -> int:
        """How many units of a kind a pair has: sentence and video 1, words L, phrases P, frames N, clips C."""
        cfg = self.cfg
        return {"s": 1, "v": 1, "w": cfg.max_words, "p": cfg.num_phrases, "f": cfg.num_units, "c": cfg.num_clips}[unit]

    def kept(self, unit: str) -> int:
        """The entries SR keeps of a vector over these units (all of them without SR)."""
        return self.cfg.kept(self.units(unit)) if self.cfg.reorganize else self.units(unit)

    def encode_video(
        self, frames: torch.Tensor, mask: torch.Tensor | None = None, factorized: bool = False
    ) -> VideoFeatures:
        """frames X (V, T, D) -> temporal features, plus the factorized LVA tensors when asked. mask (V, T): True or
        1 for a real frame, False or 0 for padding (the reference passes 0/1 integers)."""
        mask = None if mask is None else as_bool_mask(mask)
        full = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device) if mask is None else mask
        return self.video_features(frames, self.temporal(frames, full), mask, factorized)

    def video_features(
        self, frames: torch.Tensor, temporal: torch.Tensor, mask: torch.Tensor | None, factorized: bool = False
    ) -> VideoFeatures:
        """The video side from the temporal encoder's output: LVA's mask and, when asked, its per-video tensors."""
        mask = None if mask is None else as_bool_mask(mask)
        lva_mask = mask if self.cfg.mask_padding else None
        lva = self.lva.precompute(temporal, lva_mask) if factorized and self.lva is not None else None
        return VideoFeatures(frames, temporal, lva_mask, lva)

    def prepare_text(self, text: TextFeatures, factorized: bool) -> PreparedText:
        s_hat, w_hat = F.normalize(text.sentence, dim=-1), F.normalize(text.words, dim=-1)  # (Q, D), (Q, L, D)
        eye = torch.eye(s_hat.shape[-1], device=s_hat.device, dtype=s_hat.dtype)
        s_g = s_hat @ (self.global_mat_weight if self.global_mat_weight is not None else eye)
        w_l = w_hat @ (self.local_mat_weight if self.local_mat_weight is not None else eye)
        prep = PreparedText(text, s_hat, w_hat, s_g, w_l)
        if self.cfg.phrases:
            prep.p_hat = F.normalize(phrase_means(text.words, self.cfg.phrase_words), dim=-1)  # (Q, P, D)
            prep.p_l = prep.p_hat @ (self.local_mat_weight if self.local_mat_weight is not None else eye)
        if factorized and self.lva is not None:
            # the L+1 attention queries LN1(s), LN1(W_j) scaled by 1/sqrt(D), then the probes (w^_i L) M and s^ M,
            # whose products with the frame keys x~ are their dot products with R (R = x~ M')
            queries = self.lva.layer_norm1(torch.cat([text.sentence[:, None], text.words], 1))
            probes = torch.cat([w_l, s_hat[:, None]], 1) @ self.lva.frame_map()
            prep.rows = torch.cat([queries / math.sqrt(queries.shape[-1]), probes], 1)  # (Q, 2L+2, D)
        return prep

    def dots(self, prep: PreparedText, video: VideoFeatures, factorized: bool) -> PairDots:
        text, s_hat, w_hat, s_g, w_l = prep.text, prep.s_hat, prep.w_hat, prep.s_g, prep.w_l
        if self.lva is None:
            return self._dots_unconditioned(prep, video)
        if factorized:
            return self._dots_factorized(prep, video)
        v_hat = self.lva(text.sentence[:, None], video.temporal, video.mask)[:, 0]  # (Q, V, D)
        f_hat = self.lva(text.words, video.temporal, video.mask)  # (Q, N, V, D)
        dots = PairDots(
            torch.einsum("qd,qvd->qv", s_g, v_hat),
            torch.einsum("qid,qvd->qvi", w_hat, v_hat),
            torch.einsum("qd,qjvd->qvj", s_hat, f_hat),
            torch.einsum("qid,qjvd->qvij", w_l, f_hat),
        )
        if not (self.cfg.phrases or self.cfg.clips):
            return dots
        c_hat = None
        if self.cfg.clips:  # each window of frames pooled by LVA for the sentence: (Q, V, C, D)
            windows = self.clip_masks(video.temporal.shape[:2], video.mask, video.temporal.device)  # (C, V, T)
            c_hat = torch.stack([self.lva(text.sentence[:, None], video.temporal, w)[:, 0] for w in windows], 2)
        return dots.add_units(prep, v_hat, lambda p: torch.einsum("qpd,qjvd->qvpj", p, f_hat), c_hat)

    def _dots_factorized(self, prep: PreparedText, video: VideoFeatures) -> PairDots:
        """LVA through per-video tensors: one GEMM of every text-side row against every frame key, then small ops."""
        lva, pre, rows = self.lva, video.lva, prep.rows
        assert lva is not None and pre is not None and rows is not None, "encode_video/prepare_text(factorized=True)"
        s_hat, w_hat, s_g, w_l = prep.s_hat, prep.w_hat, prep.s_g, prep.w_l
        q, length, d = prep.text.words.shape
        v, t = pre.keys.shape[:2]
        _, _, _, _, r0, b3 = pre.consts
        prod = (
            (rows.reshape(-1, d) @ pre.keys.reshape(-1, d).T).view(q, 2 * length + 2, v, t).transpose(1, 2)
        )  # (Q, V, 2L+2, T)
        sentence_logits = prod[:, :, 0]  # (Q, V, T)
        pooled = lva.pool(prod[:, :, : length + 1], pre)
        # the sentence-conditioned video, formed explicitly: (Q, V, D)
        v_vec = torch.einsum("qvt,vtd->qvd", pooled.w[:, :, 0], pre.r) + pooled.c[:, :, 0, None] * r0 + b3
        v_hat = v_vec * pooled.inv_norm[:, :, 0, None]
        # word-conditioned units j: F^_j . p = (sum_f w_jf (p . R_f) + c_j (p . r0) + p . b3) / |out_j| for a probe p
        inv = pooled.inv_norm[:, :, 1:, None]  # (Q, V, L_j, 1)
        units = (
            torch.cat([pooled.w[:, :, 1:], pooled.c[:, :, 1:, None], torch.ones_like(inv)], -1) * inv
        )  # (Q, V, L_j, T+2)
        consts = torch.stack([w_l @ r0, w_l @ b3], -1)  # (Q, L_i, 2)
        probe_r = torch.cat([prod[:, :, length + 1 : 2 * length + 1], consts[:, None].expand(q, v, length, 2)], -1)
        fw = probe_r @ units.transpose(-1, -2)  # (Q, V, L_i, L_j), rows contiguous for Bi-SR's column-wise pass
        s_probe = torch.cat(
            [prod[:, :, -1], (s_hat @ r0)[:, None, None].expand(q, v, 1), (s_hat @ b3)[:, None, None].expand(q, v, 1)],
            -1,
        )
        sf = (units @ s_probe[..., None]).squeeze(-1)  # (Q, V, L_j)
        dots = PairDots(torch.einsum("qd,qvd->qv", s_g, v_hat), torch.einsum("qid,qvd->qvi", w_hat, v_hat), sf, fw)
        if not (self.cfg.phrases or self.cfg.clips):
            return dots

        def f_dot(p: torch.Tensor) -> torch.Tensor:  # probes (Q, P, D) against the units: (Q, V, P, L_j)
            r = torch.einsum("qpd,vtd->qvpt", p, pre.r)
            return torch.cat([r, torch.stack([p @ r0, p @ b3], -1)[:, None].expand(q, v, -1, 2)], -1) @ units.transpose(
                -1, -2
            )

        c_hat = self._clips_factorized(sentence_logits, pre) if self.cfg.clips else None
        return dots.add_units(prep, v_hat, f_dot, c_hat)

    def _dots_unconditioned(self, prep: PreparedText, video: VideoFeatures) -> PairDots:
        """X-CLIP: video = normalized mean of the temporal features, frames = normalized raw CLIP frames (clips:
        normalized means of windows of temporal features)."""
        s_g, s_hat, w_hat, w_l = prep.s_g, prep.s_hat, prep.w_hat, prep.w_l
        v_hat = F.normalize(masked_mean(video.temporal, video.mask), dim=-1)  # (V, D)
        f_hat = F.normalize(video.frames, dim=-1)  # (V, T, D)
        dots = PairDots(
            s_g @ v_hat.T,
            torch.einsum("qid,vd->qvi", w_hat, v_hat),
            torch.einsum("qd,vjd->qvj", s_hat, f_hat),
            torch.einsum("qid,vjd->qvij", w_l, f_hat),
        )
        if not (self.cfg.phrases or self.cfg.clips):
            return dots
        c_hat = None
        if self.cfg.clips:
            windows = self.clip_masks(video.temporal.shape[:2], video.mask, video.temporal.device)  # (C, V, T)
            c_hat = torch.stack([F.normalize(masked_mean(video.temporal, w), dim=-1) for w in windows], 1)  # (V, C, D)
        return dots.add_units(prep, v_hat, lambda p: torch.einsum("qpd,vjd->qvpj", p, f_hat), c_hat)

    def clip_masks(
        self, shape: tuple[int, ...], mask: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:  # fmt: skip
        """(C, V, T) bool: the frames each clip pools, within the frames LVA sees (`mask`, else all); a clip whose
        window holds none of those pools its whole window (and is marked invalid by `clip_units`)."""
        v, t = shape
        slots = torch.arange(t, device=device) // self.cfg.clip_frames  # (T,) the clip of each slot
        windows = (slots[None] == torch.arange(self.cfg.num_clips, device=device)[:, None])[:, None].expand(-1, v, t)
        if mask is None:
            return windows
        both = windows & mask[None]
        return torch.where(both.any(-1, keepdim=True), both, windows)

    def clip_units(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(V, C) bool: clips whose window holds a frame that counts (None: all)."""
        if mask is None:
            return None
        v, t = mask.shape
        return (self.clip_masks((v, t), None, mask.device) & mask[None]).any(-1).T

    def _clips_factorized(self, sentence_logits: torch.Tensor, pre: LvaVideo) -> torch.Tensor:
        """The sentence-conditioned pool of each window of frames, through the per-video tensors: (Q, V, C, D)."""
        assert self.lva is not None
        _, _, _, _, r0, b3 = pre.consts
        q, v, t = sentence_logits.shape
        windows = self.clip_masks((v, t), pre.mask, sentence_logits.device)  # (C, V, T)
        logits = sentence_logits[:, :, None].masked_fill(~windows.permute(1, 0, 2)[None], float("-inf"))  # (Q,V,C,T)
        pooled = self.lva.pool(logits, LvaVideo(pre.keys, pre.r, pre.stats, None, pre.consts))
        vec = torch.einsum("qvkt,vtd->qvkd", pooled.w, pre.r) + pooled.c[..., None] * r0 + b3
        return vec * pooled.inv_norm[..., None]

    def similarities(self, dots: PairDots, text: TextFeatures, video: VideoFeatures, tau: torch.Tensor) -> torch.Tensor:
        """The tau-scaled scores of the active similarities, stacked: (Q, V, K). A vector over text units is kept
        (SR keep) then aggregated by ISA; a vector over video units is kept and fused; a text-by-video matrix goes
        through Bi-SR and Bi-ISA: the same for words and phrases, frames and clips."""
        cfg = self.cfg
        words = None if text.mask is None else text.mask[:, None, :]  # (Q, 1, L)
        phrases = None if words is None else phrase_any(words, cfg.phrase_words)  # (Q, 1, P)
        frames = words if cfg.text_conditioning else (None if video.mask is None else video.mask[None])
        clip_ok = self.clip_units(video.mask)
        clips = None if clip_ok is None else clip_ok[None]  # (1, V, C)
        valid = {"w": words, "p": phrases, "f": frames, "c": clips, "s": None, "v": None}
        out = []
        for name in cfg.active_similarities:
            t_unit, v_unit, kind = UNITS[name]
            x = getattr(dots, name)
            assert x is not None, f"no dots for {name}"
            if kind == "scalar":
                out.append(x)
            elif kind == "text":
                ok_in = valid[t_unit]
                x_kept, ok = keep(x, self.kept(t_unit), ok_in) if cfg.reorganize else (x, ok_in)
                x_kept, ok = self._by_mass(x_kept, ok, x, ok_in)
                out.append(getattr(self, f"isa_{name}")(x_kept, ok))
            elif kind == "video":
                ok_in = valid[v_unit]
                y, ok = keep_and_fuse(x, self.kept(v_unit), ok_in) if cfg.reorganize else (x, ok_in)
                y, ok = self._fused_by_mass(y, ok, x, ok_in)
                out.append(getattr(self, f"isa_{name}")(y, ok))
            else:
                out.append(self._matrix(name, x, valid[t_unit], valid[v_unit], self.kept(t_unit), self.kept(v_unit)))
        return tau * torch.stack(out, dim=-1)

    def _by_mass(
        self, x: torch.Tensor, ok: torch.Tensor | None, full: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """keep_rule "mass": of the kept entries, the fewest that hold keep_mass of the vector's softmax mass."""
        if not (self.cfg.reorganize and self.cfg.keep_rule == "mass"):
            return x, ok
        whole = full if valid is None else full.masked_fill(~valid, float("-inf"))
        return by_mass(x, ok, whole, self.cfg.isa_lambda, self.cfg.keep_mass)

    def _fused_by_mass(
        self, y: torch.Tensor, ok: torch.Tensor | None, full: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """keep_rule "mass" on keep-and-fuse output: the kept entries thinned by mass, the fused last one stays."""
        if not (self.cfg.reorganize and self.cfg.keep_rule == "mass"):
            return y, ok
        kept, kept_ok = self._by_mass(y[..., :-1], None if ok is None else ok[..., :-1], full, valid)
        assert kept_ok is not None  # the mass rule always marks
        fused_ok = torch.ones_like(y[..., -1:], dtype=torch.bool) if ok is None else ok[..., -1:]
        return torch.cat([kept, y[..., -1:]], -1), torch.cat([kept_ok, fused_ok], -1)

    def _matrix(
        self, name: str, m: torch.Tensor, words: torch.Tensor | None, units: torch.Tensor | None, k_w: int, k_f: int
    ) -> torch.Tensor:
        """Bi-SR then Bi-ISA on a (Q, V, text units, video units) matrix (frame-word: words by frames)."""
        valid = None
        if words is not None or units is not None:
            ones = torch.ones_like(m, dtype=torch.bool)
            valid = (
                ones
                & (words[..., :, None] if words is not None else ones)
                & (units[..., None, :] if units is not None else ones)
            )
        if self.cfg.reorganize:
            full = m if valid is None else m.masked_fill(~valid, float("-inf"))
            m, valid = bi_keep(m, k_w, k_f, valid)
            if self.cfg.keep_rule == "mass":  # each remaining row's mass over all its columns: (.., k_w, n)
                m, valid = by_mass(m, valid, top_values(full, k_w, -2), self.cfg.isa_lambda, self.cfg.keep_mass)
        col_ok = None if valid is None else valid.any(-2)  # (Q, V, k_f)
        row_ok = None if valid is None else valid.any(-1)  # (Q, V, k_w)
        isa = {part: getattr(self, f"isa_{name}_{part}") for part in ("words", "frames", "u", "z")}
        u = isa["words"](m.transpose(-1, -2), None if valid is None else valid.transpose(-1, -2))  # over text units
        z = isa["frames"](m, valid)  # over video units
        score: torch.Tensor = (isa["u"](u, col_ok) + isa["z"](z, row_ok)) / 2
        return score


# similarity -> (text unit, video unit, kind): s sentence, p phrases, w words; v video, c clips, f frames
UNITS = {
    "vs": ("s", "v", "scalar"), "vw": ("w", "v", "text"), "sf": ("s", "f", "video"), "fw": ("w", "f", "matrix"),
    "vp": ("p", "v", "text"), "pf": ("p", "f", "matrix"), "cs": ("s", "c", "video"), "cw": ("w", "c", "matrix"),
    "cp": ("p", "c", "matrix"),
}  # fmt: skip


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
