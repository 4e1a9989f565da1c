"""The TC-MGC head: everything TC-MGC adds on top of CLIP (temporal encoder, LVA, G, L, the ISA matrices and LSA),
and its two paths: the direct one for training and the factorized one for retrieval (`tcmgc.py` describes both)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tcmgc_cli.config import ModelConfig
from tcmgc_cli.model import hierarchy
from tcmgc_cli.model.aggregate import ISA, Aggregation
from tcmgc_cli.model.attention import LanguageVideoAttention, LvaVideo
from tcmgc_cli.model.features import (
    PairDots,
    PreparedText,
    TextFeatures,
    VideoFeatures,
    as_bool_mask,
    masked_mean,
    phrase_any,
    phrase_means,
)
from tcmgc_cli.model.reorganize import bi_keep, by_mass, keep, keep_and_fuse, top_values
from tcmgc_cli.model.temporal import TemporalEncoder

# similarity -> (text unit, video unit, kind): s sentence, p phrases, w words; v video, c snippets, f frames (the
# letter c and the codes cs, cw, cp are kept from the snippets' earlier name, clips: weights and results carry them)
UNITS = {
    "vs": ("s", "v", "scalar"), "vw": ("w", "v", "text"), "sf": ("s", "f", "video"), "fw": ("w", "f", "matrix"),
    "vp": ("p", "v", "text"), "pf": ("p", "f", "matrix"), "cs": ("s", "c", "video"), "cw": ("w", "c", "matrix"),
    "cp": ("p", "c", "matrix"),
    "hw": ("w", "u", "matrix"), "hp": ("m", "g", "matrix"), "hs": ("s", "v", "scalar"),
}  # fmt: skip
# the hierarchy's units (model/hierarchy.py): u its first-level video units, m merged phrases, g merged clips


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
        """How many units of a kind a pair has: sentence and video 1, words L, phrases P, frames N, snippets C, and
        the hierarchy's first-level video units, merged phrases and merged clips."""
        cfg, merge = self.cfg, self.cfg.hierarchy_merge
        return {"s": 1, "v": 1, "w": cfg.max_words, "p": cfg.num_phrases, "f": cfg.num_units, "c": cfg.num_snippets,
                "u": cfg.hierarchy_units, "m": math.ceil(cfg.max_words / merge),
                "g": math.ceil(cfg.hierarchy_units / merge)}[unit]  # fmt: skip

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
        """Every active similarity's dots (the hierarchy's on LVA's units are formed beside those units)."""
        if self.lva is None:
            found = self._dots_unconditioned(prep, video)
        else:
            found = self._dots_factorized(prep, video) if factorized else self._dots_direct(prep, video)
        if self.cfg.hierarchy and self.cfg.hierarchy_inputs == "agnostic":
            mean = F.normalize(masked_mean(video.temporal, video.mask), dim=-1)  # (V, D)
            found.h = hierarchy.agnostic(prep.s_hat, prep.w_hat, video.temporal, mean, video.mask,
                                         self.cfg.hierarchy_merge, prep.text.mask)  # fmt: skip
        return found

    def _conditioned_hierarchy(self) -> bool:
        return self.cfg.hierarchy and self.cfg.hierarchy_inputs == "conditioned"

    def _dots_direct(self, prep: PreparedText, video: VideoFeatures) -> PairDots:
        """LVA formed per pair (training): every pooled vector explicit."""
        text, s_hat, w_hat, s_g, w_l = prep.text, prep.s_hat, prep.w_hat, prep.s_g, prep.w_l
        assert self.lva is not None
        v_hat = self.lva(text.sentence[:, None], video.temporal, video.mask)[:, 0]  # (Q, V, D)
        f_hat = self.lva(text.words, video.temporal, video.mask)  # (Q, N, V, D)
        dots = PairDots(
            torch.einsum("qd,qvd->qv", s_g, v_hat),
            torch.einsum("qid,qvd->qvi", w_hat, v_hat),
            torch.einsum("qd,qjvd->qvj", s_hat, f_hat),
            torch.einsum("qid,qjvd->qvij", w_l, f_hat),
        )
        if self._conditioned_hierarchy():
            dots.h = hierarchy.conditioned(s_hat, w_hat, f_hat.transpose(1, 2), v_hat, self.cfg.hierarchy_merge,
                                           text.mask)  # fmt: skip  # (Q, L, V, D) -> (Q, V, L, D)
        if not (self.cfg.phrases or self.cfg.snippets):
            return dots
        c_hat = None
        if self.cfg.snippets:  # each window of frames pooled by LVA for the sentence: (Q, V, C, D)
            windows = self.snippet_masks(video.temporal.shape[:2], video.mask, video.temporal.device)  # (C, V, T)
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

        def f_dot(p: torch.Tensor) -> torch.Tensor:  # probes (Q, P, D) against the units: (Q, V, P, L_j)
            r = torch.einsum("qpd,vtd->qvpt", p, pre.r)
            return torch.cat([r, torch.stack([p @ r0, p @ b3], -1)[:, None].expand(q, v, -1, 2)], -1) @ units.transpose(
                -1, -2
            )

        if self._conditioned_hierarchy():  # each pool is `units` over the basis R_1..R_T, r0, b3: (V, T+2, D)
            basis = torch.cat([pre.r, r0.expand(v, 1, d), b3.expand(v, 1, d)], 1)
            dots.h = hierarchy.conditioned_factorized(s_hat, w_hat, f_dot(w_hat), units, basis, v_hat,
                                                      self.cfg.hierarchy_merge, prep.text.mask)  # fmt: skip
        if not (self.cfg.phrases or self.cfg.snippets):
            return dots
        c_hat = self._snippets_factorized(sentence_logits, pre) if self.cfg.snippets else None
        return dots.add_units(prep, v_hat, f_dot, c_hat)

    def _dots_unconditioned(self, prep: PreparedText, video: VideoFeatures) -> PairDots:
        """X-CLIP: video = normalized mean of the temporal features, frames = normalized raw CLIP frames (snippets:
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
        if not (self.cfg.phrases or self.cfg.snippets):
            return dots
        c_hat = None
        if self.cfg.snippets:
            windows = self.snippet_masks(video.temporal.shape[:2], video.mask, video.temporal.device)  # (C, V, T)
            c_hat = torch.stack([F.normalize(masked_mean(video.temporal, w), dim=-1) for w in windows], 1)  # (V, C, D)
        return dots.add_units(prep, v_hat, lambda p: torch.einsum("qpd,vjd->qvpj", p, f_hat), c_hat)

    def snippet_masks(
        self, shape: tuple[int, ...], mask: torch.Tensor | None, device: torch.device
    ) -> torch.Tensor:  # fmt: skip
        """(C, V, T) bool: the frames each snippet pools, within the frames LVA sees (`mask`, else all); a snippet
        whose window holds none of those pools its whole window (and is marked invalid by `snippet_units`)."""
        v, t = shape
        slots = torch.arange(t, device=device) // self.cfg.snippet_frames  # (T,) the snippet of each slot
        windows = (slots[None] == torch.arange(self.cfg.num_snippets, device=device)[:, None])[:, None].expand(-1, v, t)
        if mask is None:
            return windows
        both = windows & mask[None]
        return torch.where(both.any(-1, keepdim=True), both, windows)

    def snippet_units(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(V, C) bool: snippets whose window holds a frame that counts (None: all)."""
        if mask is None:
            return None
        v, t = mask.shape
        return (self.snippet_masks((v, t), None, mask.device) & mask[None]).any(-1).T

    def _snippets_factorized(self, sentence_logits: torch.Tensor, pre: LvaVideo) -> torch.Tensor:
        """The sentence-conditioned pool of each window of frames, through the per-video tensors: (Q, V, C, D)."""
        assert self.lva is not None
        _, _, _, _, r0, b3 = pre.consts
        q, v, t = sentence_logits.shape
        windows = self.snippet_masks((v, t), pre.mask, sentence_logits.device)  # (C, V, T)
        logits = sentence_logits[:, :, None].masked_fill(~windows.permute(1, 0, 2)[None], float("-inf"))  # (Q,V,C,T)
        pooled = self.lva.pool(logits, LvaVideo(pre.keys, pre.r, pre.stats, None, pre.consts))
        vec = torch.einsum("qvkt,vtd->qvkd", pooled.w, pre.r) + pooled.c[..., None] * r0 + b3
        return vec * pooled.inv_norm[..., None]

    def similarities(self, dots: PairDots, text: TextFeatures, video: VideoFeatures, tau: torch.Tensor) -> torch.Tensor:
        """The tau-scaled scores of the active similarities, stacked: (Q, V, K). A vector over text units is kept
        (SR keep) then aggregated by ISA; a vector over video units is kept and fused; a text-by-video matrix goes
        through Bi-SR and Bi-ISA: the same for words and phrases, frames and snippets."""
        cfg = self.cfg
        words = None if text.mask is None else text.mask[:, None, :]  # (Q, 1, L)
        phrases = None if words is None else phrase_any(words, cfg.phrase_words)  # (Q, 1, P)
        frames = words if cfg.text_conditioning else (None if video.mask is None else video.mask[None])
        snippet_ok = self.snippet_units(video.mask)
        snippets = None if snippet_ok is None else snippet_ok[None]  # (1, V, C)
        valid = {"w": words, "p": phrases, "f": frames, "c": snippets, "s": None, "v": None}
        if dots.h is not None:
            valid |= {"u": dots.h.units_ok, "m": dots.h.phrases_ok, "g": dots.h.clips_ok}
        out = []
        for name in cfg.active_similarities:
            t_unit, v_unit, kind = UNITS[name]
            x = dots.get(name)
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
