"""Slow, obvious implementations of the method doc's equations: Python loops over one pair at a time."""

import math

import torch
import torch.nn.functional as F

from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures, VideoFeatures


def layer_norm(x: torch.Tensor, ln: torch.nn.LayerNorm) -> torch.Tensor:
    mean = sum(x) / len(x)
    var = sum((xi - mean) ** 2 for xi in x) / len(x)
    return torch.stack([(xi - mean) / torch.sqrt(var + ln.eps) for xi in x]) * ln.weight + ln.bias


@torch.no_grad()
def lva(model: TcmgcModel, query: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Section 4 for one query (D,) and one video (T, D) -> normalized pooled vector (D,)."""
    m = model.head.lva
    assert m is not None
    q = layer_norm(query, m.layer_norm1)
    keys = [layer_norm(f, m.layer_norm1) for f in frames]
    logits = torch.stack([torch.dot(q, k) / math.sqrt(len(q)) for k in keys])
    a = torch.softmax(logits, 0)
    p = sum(a[f] * keys[f] for f in range(len(keys)))
    p2 = layer_norm(p, m.layer_norm2)
    out = layer_norm(p2 + m.linear_proj.weight @ p2 + m.linear_proj.bias, m.layer_norm3)
    return out / out.norm()


def isa(x: list[float], a: torch.Tensor, lam: float) -> float:
    """Section 5: softmax -> row vector times A -> softmax -> weighted sum."""
    e = [math.exp(lam * (xi - max(x))) for xi in x]
    att = [ei / sum(e) for ei in e]
    b = [sum(att[i] * float(a[i, j]) for i in range(len(x))) for j in range(len(x))]
    e2 = [math.exp(lam * (bi - max(b))) for bi in b]
    w = [ei / sum(e2) for ei in e2]
    return sum(wi * xi for wi, xi in zip(w, x, strict=True))


def keep(x: list[float], k: int) -> list[float]:
    return sorted(x, reverse=True)[:k]


def keep_and_fuse(x: list[float], k: int) -> list[float]:
    s = sorted(x, reverse=True)
    rest = s[k:]
    e = [math.exp(r - max(rest)) for r in rest]
    return s[:k] + [sum(ei / sum(e) * r for ei, r in zip(e, rest, strict=True))]


@torch.no_grad()
def pair_scores(model: TcmgcModel, text: TextFeatures, t: int, video: VideoFeatures, v: int) -> list[float]:
    """Section 7 for one (text, video) pair, full TC-MGC (LVA on, SR on): the four tau-scaled scores."""
    cfg, head = model.cfg, model.head
    tau = float(model.tau.detach())
    lam = cfg.isa_lambda
    k = cfg.kept(cfg.max_words)
    s, words, frames = text.sentence[t], text.words[t], video.temporal[v]
    s_hat = s / s.norm()
    w_hat = [w / w.norm() for w in words]
    v_hat = lva(model, s, frames)
    f_hat = [lva(model, w, frames) for w in words]
    assert head.global_mat_weight is not None and head.local_mat_weight is not None
    s_vs = float(torch.dot(s_hat @ head.global_mat_weight, v_hat))
    x = [float(torch.dot(w, v_hat)) for w in w_hat]
    assert head.isa_vw is not None and head.isa_sf is not None
    s_vw = isa(keep(x, k), head.isa_vw.weight, lam)
    y = [float(torch.dot(s_hat, f)) for f in f_hat]
    s_sf = isa(keep_and_fuse(y, k), head.isa_sf.weight, lam)
    m = [[float(torch.dot(w @ head.local_mat_weight, f)) for f in f_hat] for w in w_hat]  # m[i][j]
    cols = [keep([m[i][j] for i in range(len(m))], k) for j in range(len(f_hat))]  # per column: k x Nw
    rows = [keep([cols[j][r] for j in range(len(cols))], k) for r in range(k)]  # per kept row: k x k
    u = [isa([rows[r][c] for r in range(k)], head.isa_fw_words.weight, lam) for c in range(k)]
    z = [isa(rows[r], head.isa_fw_frames.weight, lam) for r in range(k)]
    s_fw = (isa(u, head.isa_fw_u.weight, lam) + isa(z, head.isa_fw_z.weight, lam)) / 2
    return [tau * s_vs, tau * s_vw, tau * s_sf, tau * s_fw]


def lsa(g: list[float], c: torch.Tensor) -> float:
    logits = [sum(g[i] * float(c[i, j]) for i in range(len(g))) for j in range(len(g))]
    e = [math.exp(lj - max(logits)) for lj in logits]
    return sum(ei / sum(e) * gi for ei, gi in zip(e, g, strict=True))


@torch.no_grad()
def xclip_pair(model: TcmgcModel, text: TextFeatures, t: int, video: VideoFeatures, v: int) -> float:
    """X-CLIP's score for one pair: mean-pooled video, raw frames, single-softmax attention over similarities."""
    head, lam, tau = model.head, model.cfg.isa_lambda, float(model.tau.detach())

    def att(x: list[float], a: torch.Tensor) -> float:
        e = [math.exp(lam * (xi - max(x))) for xi in x]
        p = [ei / sum(e) for ei in e]
        w = [sum(p[i] * float(a[i, j]) for i in range(len(x))) for j in range(len(x))]
        return sum(wj * xj for wj, xj in zip(w, x, strict=True))

    s_hat = F.normalize(text.sentence[t], dim=0)
    w_hat = F.normalize(text.words[t], dim=-1)
    v_hat = F.normalize(video.temporal[v].mean(0), dim=0)
    f_hat = F.normalize(video.frames[v], dim=-1)
    assert head.global_mat_weight is not None and head.local_mat_weight is not None
    vs = float(torch.dot(s_hat @ head.global_mat_weight, v_hat))
    vw = att([float(torch.dot(w, v_hat)) for w in w_hat], head.isa_vw.weight)
    sf = att([float(torch.dot(s_hat, f)) for f in f_hat], head.isa_sf.weight)
    m = [[float(torch.dot(w @ head.local_mat_weight, f)) for f in f_hat] for w in w_hat]
    u = [att([m[i][j] for i in range(len(m))], head.isa_fw_words.weight) for j in range(len(f_hat))]
    z = [att(m[i], head.isa_fw_frames.weight) for i in range(len(m))]
    fw = (att(u, head.isa_fw_u.weight) + att(z, head.isa_fw_z.weight)) / 2
    return tau * (vs + vw + sf + fw) / 4


def _bi_isa(m: list[list[float]], kr: int, kc: int, head: object, name: str, lam: float) -> float:
    """Bi-SR (top kr of every column, then top kc of every kept row) and Bi-ISA, by loops."""
    isa_of = {part: getattr(head, f"isa_{name}_{part}").weight for part in ("words", "frames", "u", "z")}
    cols = [keep([m[i][j] for i in range(len(m))], kr) for j in range(len(m[0]))]
    rows = [keep([cols[j][r] for j in range(len(cols))], kc) for r in range(kr)]
    u = [isa([rows[r][c] for r in range(kr)], isa_of["words"], lam) for c in range(kc)]
    z = [isa(rows[r], isa_of["frames"], lam) for r in range(kr)]
    return (isa(u, isa_of["u"], lam) + isa(z, isa_of["z"], lam)) / 2


@torch.no_grad()
def unit_pair_scores(model: TcmgcModel, text: TextFeatures, t: int, video: VideoFeatures, v: int) -> dict[str, float]:
    """Every active similarity of one pair, with phrases (means of consecutive tokens) and snippets (LVA of the
    sentence over each window of frames) as well as words and frames; LVA on, SR on."""
    cfg, head = model.cfg, model.head
    tau, lam = float(model.tau.detach()), cfg.isa_lambda
    s, words, frames = text.sentence[t], text.words[t], video.temporal[v]
    size, clip = cfg.phrase_words, cfg.snippet_frames
    phrases = [sum(words[i : i + size]) / len(words[i : i + size]) for i in range(0, len(words), size)]
    units = {
        "s": [s / s.norm()],
        "w": [w / w.norm() for w in words],
        "p": [p / p.norm() for p in phrases],
        "v": [lva(model, s, frames)],
        "f": [lva(model, w, frames) for w in words],
        "c": [lva(model, s, frames[k : k + clip]) for k in range(0, len(frames), clip)],
    }
    eye = torch.eye(len(s))
    local = head.local_mat_weight if head.local_mat_weight is not None else eye
    out = {}
    for name in cfg.active_similarities:
        t_unit, v_unit, kind = {"vs": ("s", "v", "scalar"), "vw": ("w", "v", "text"), "sf": ("s", "f", "video"),
                                "fw": ("w", "f", "matrix"), "vp": ("p", "v", "text"), "pf": ("p", "f", "matrix"),
                                "cs": ("s", "c", "video"), "cw": ("w", "c", "matrix"), "cp": ("p", "c", "matrix")}[name]  # fmt: skip
        tx, vx = units[t_unit], units[v_unit]
        kt, kv = cfg.kept(len(tx)), cfg.kept(len(vx))
        if kind == "scalar":
            out[name] = float(torch.dot(tx[0] @ head.global_mat_weight, vx[0]))
        elif kind == "text":
            out[name] = isa(
                keep([float(torch.dot(x, vx[0])) for x in tx], kt), getattr(head, f"isa_{name}").weight, lam
            )
        elif kind == "video":
            y = [float(torch.dot(tx[0], f)) for f in vx]
            out[name] = isa(keep_and_fuse(y, kv), getattr(head, f"isa_{name}").weight, lam)
        else:
            m = [[float(torch.dot(x @ local, f)) for f in vx] for x in tx]
            out[name] = _bi_isa(m, kt, kv, head, name, lam)
    return {k: tau * v for k, v in out.items()}


def segments(adjacent: list[float], parts: int, valid: list[bool] | None = None) -> list[int]:
    """Section 17's merge of n units, given the n - 1 cosines of neighbours: cut at the parts - 1 least similar
    neighbours (first where a unit that counts meets one that does not; ties: the earlier gap)."""
    n = len(adjacent) + 1
    gaps = [(-3.0 if valid is not None and valid[i] != valid[i + 1] else a, i) for i, a in enumerate(adjacent)]
    cuts = {i for _, i in sorted(gaps)[: min(parts, n) - 1]}
    seg, out = 0, [0]
    for i in range(n - 1):
        seg += i in cuts
        out.append(seg)
    return out


def merged(units: list[torch.Tensor], parts: int) -> list[torch.Tensor]:
    """Adjacent unit vectors merged into `parts` normalized means, cut where neighbours are least alike."""
    seg = segments([float(torch.dot(units[i], units[i + 1])) for i in range(len(units) - 1)], parts)
    sums = [sum(u for u, s in zip(units, seg, strict=True) if s == p) for p in range(max(seg) + 1)]
    return [s / s.norm() for s in sums]


@torch.no_grad()
def hierarchy_pair_scores(model: TcmgcModel, text: TextFeatures, t: int, video: VideoFeatures, v: int) -> list[float]:
    """Section 17 for one pair, no masks: words x units, merged phrases x merged clips (both by Bi-SR and Bi-ISA over
    cosines), sentence . video; units are LVA's word-conditioned pools and video ("conditioned") or the temporal
    frames and their mean ("agnostic"). tau-scaled: [hw, hp, hs]."""
    cfg, head = model.cfg, model.head
    tau, lam, merge = float(model.tau.detach()), cfg.isa_lambda, cfg.hierarchy_merge
    s, words, frames = text.sentence[t], text.words[t], video.temporal[v]
    w_hat = [w / w.norm() for w in words]
    if cfg.hierarchy_inputs == "conditioned":
        units, top = [lva(model, w, frames) for w in words], lva(model, s, frames)
    else:
        units, top = [f / f.norm() for f in frames], frames.mean(0) / frames.mean(0).norm()
    phrases, clips = merged(w_hat, math.ceil(len(w_hat) / merge)), merged(units, math.ceil(len(units) / merge))
    hw = [[float(torch.dot(w, u)) for u in units] for w in w_hat]
    hp = [[float(torch.dot(p, c)) for c in clips] for p in phrases]
    return [
        tau * _bi_isa(hw, cfg.kept(len(w_hat)), cfg.kept(len(units)), head, "hw", lam),
        tau * _bi_isa(hp, cfg.kept(len(phrases)), cfg.kept(len(clips)), head, "hp", lam),
        tau * float(torch.dot(s / s.norm(), top)),
    ]


@torch.no_grad()
def lva_weights(model: TcmgcModel, query: torch.Tensor, frames: torch.Tensor) -> list[float]:
    """Section 4's attention a_f of one query (D,) over one entry's temporal features (T, D), padding included."""
    m = model.head.lva
    assert m is not None
    q = layer_norm(query, m.layer_norm1)
    logits = [float(torch.dot(q, layer_norm(f, m.layer_norm1))) / math.sqrt(len(q)) for f in frames]
    e = [math.exp(x - max(logits)) for x in logits]
    return [x / sum(e) for x in e]
