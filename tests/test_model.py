"""TC-MGC head numerics against the loop oracles of tests/oracle.py, and the two scoring paths against each other."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tcmgc_cli.config import ModelConfig
from tcmgc_cli.model import aggregate, reorganize
from tcmgc_cli.model.tcmgc import TcmgcModel, TextFeatures
from tests import oracle

CFG = ModelConfig(
    embed_dim=32, max_words=12, num_frames=6, temporal_layers=2, temporal_heads=2, temporal_positions=16, keep_rate=0.25
)


@pytest.fixture(scope="module")
def clip() -> torch.nn.Module:
    from tcmgc_cli.model.encoder import load_clip

    return load_clip("tcmgc-clip-tiny", None)[0]


def make_model(clip: torch.nn.Module, cfg: ModelConfig = CFG, seed: int = 0) -> TcmgcModel:
    """A model whose every head parameter is perturbed, so identity inits cannot hide a bug."""
    torch.manual_seed(seed)
    model = TcmgcModel(cfg, clip).eval()
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            p.add_(
                torch.randn_like(p) * (0.05 if "weight" in name and p.dim() == 2 and p.shape[0] == p.shape[1] else 0.2)
            )
        model.clip.logit_scale.fill_(2.0)
    return model


def features(q: int, v: int, cfg: ModelConfig = CFG, seed: int = 1) -> tuple[TextFeatures, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(q, cfg.max_words, cfg.embed_dim, generator=g)
    return TextFeatures(words, words[:, -1] + 0.1 * torch.randn(q, cfg.embed_dim, generator=g)), torch.randn(
        v, cfg.num_frames, cfg.embed_dim, generator=g
    )


def test_sr_and_isa_match_loops() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 9, generator=g)
    kept, _ = reorganize.keep(x, 3)
    fused, _ = reorganize.keep_and_fuse(x, 3)
    a = torch.eye(4) + 0.1 * torch.randn(4, 4, generator=g)
    module = aggregate.ISA(4, lam=7.0)
    module.weight.data = a
    for row in range(5):
        xs = x[row].tolist()
        assert kept[row].tolist() == pytest.approx(oracle.keep(xs, 3))
        assert fused[row].tolist() == pytest.approx(oracle.keep_and_fuse(xs, 3), rel=1e-5)
        assert float(module(fused[row]).detach()) == pytest.approx(oracle.isa(fused[row].tolist(), a, 7.0), rel=1e-5)
    m = torch.randn(2, 7, 5, generator=g)
    bi, _ = reorganize.bi_keep(m, 3, 2)
    for b in range(2):
        cols = [oracle.keep(m[b, :, j].tolist(), 3) for j in range(5)]
        rows = [oracle.keep([cols[j][r] for j in range(5)], 2) for r in range(3)]
        torch.testing.assert_close(bi[b], torch.tensor(rows))


def test_lva_direct_matches_section_4(clip: torch.nn.Module) -> None:
    model = make_model(clip)
    text, frames = features(2, 3)
    video = model.encode_video(frames)
    assert model.head.lva is not None
    pooled = model.head.lva(text.words[:, :2], video.temporal)  # (2, 2, 3, D)
    for q in range(2):
        for k in range(2):
            for v in range(3):
                want = oracle.lva(model, text.words[q, k], video.temporal[v])
                torch.testing.assert_close(pooled[q, k, v], want, rtol=1e-4, atol=1e-5)


def test_four_similarities_and_lsa_match_section_7_and_8(clip: torch.nn.Module) -> None:
    model = make_model(clip)
    text, frames = features(2, 3)
    out = model(text, model.encode_video(frames))
    for t in range(2):
        for v in range(3):
            g = oracle.pair_scores(model, text, t, model.encode_video(frames), v)
            assert out["parts"][t, v].tolist() == pytest.approx(g, rel=1e-4, abs=1e-4)
            c = model.head.aggregation.weight
            assert c is not None
            assert float(out["logits"][t, v].detach()) == pytest.approx(oracle.lsa(g, c.detach()), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("chunks", [(1, 1), (2, 3), (3, 2), (64, 64)])
def test_training_and_chunked_retrieval_paths_agree(clip: torch.nn.Module, chunks: tuple[int, int]) -> None:
    model = make_model(clip)
    text, frames = features(5, 7)
    direct = model(text, model.encode_video(frames))
    chunked = model.score_chunked(text, model.encode_video(frames, factorized=True), *chunks, parts=True)
    torch.testing.assert_close(chunked["logits"], direct["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked["parts"], direct["parts"], rtol=1e-5, atol=1e-5)


def test_permuting_videos_permutes_columns(clip: torch.nn.Module) -> None:
    model = make_model(clip)
    text, frames = features(3, 6)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    base = model.score_chunked(text, model.encode_video(frames, factorized=True), 2, 4)["logits"]
    permuted = model.score_chunked(text, model.encode_video(frames[perm], factorized=True), 2, 4)["logits"]
    torch.testing.assert_close(permuted, base[:, perm], rtol=1e-5, atol=1e-5)


def test_xclip_reduction_is_xclip(clip: torch.nn.Module) -> None:
    model = make_model(clip, CFG.xclip())
    assert model.head.lva is None and model.cfg.sdr_alpha == 0
    text, frames = features(2, 3)
    video = model.encode_video(frames)
    logits = model(text, video)["logits"]
    for t in range(2):
        for v in range(3):
            assert float(logits[t, v].detach()) == pytest.approx(
                oracle.xclip_pair(model, text, t, video, v), rel=1e-4, abs=1e-4
            )
    torch.testing.assert_close(model.score_chunked(text, video, 1, 2)["logits"], logits, rtol=1e-5, atol=1e-5)


def test_padding_cannot_change_scores_with_masking(clip: torch.nn.Module) -> None:
    cfg = replace(CFG, mask_padding=True)
    model = make_model(clip, cfg)
    text, frames = features(3, 4, cfg)
    text.mask = torch.arange(cfg.max_words)[None] < torch.tensor([[5], [12], [9]])  # (Q, L)
    fmask = torch.arange(cfg.num_frames)[None] < torch.tensor([[6], [3], [4], [1]])  # (V, T)
    g = torch.Generator().manual_seed(7)
    noisy_words = torch.where(text.mask[..., None], text.words, torch.randn(text.words.shape, generator=g) * 5)
    noisy_frames = torch.where(fmask[..., None], frames, torch.randn(frames.shape, generator=g) * 5)
    base = model.score_chunked(text, model.encode_video(frames, fmask, factorized=True), 2, 2)["logits"]
    other = TextFeatures(noisy_words, text.sentence, text.mask)
    noisy = model.score_chunked(other, model.encode_video(noisy_frames, fmask, factorized=True), 2, 2)["logits"]
    torch.testing.assert_close(noisy, base, rtol=1e-5, atol=1e-4)
    direct = model(text, model.encode_video(frames, fmask))["logits"]
    torch.testing.assert_close(direct, base, rtol=1e-5, atol=1e-5)
    unmasked = make_model(clip, CFG)  # the reference's default: padding does move scores
    a = unmasked(TextFeatures(text.words, text.sentence), unmasked.encode_video(frames))["logits"]
    b = unmasked(TextFeatures(noisy_words, text.sentence), unmasked.encode_video(frames))["logits"]
    assert not torch.allclose(a, b, atol=1e-3)


def test_gradients_reach_every_trainable_parameter(clip: torch.nn.Module) -> None:
    from tcmgc_cli.model.encoder import Tokenizer
    from tcmgc_cli.model.losses import tcmgc_loss

    model = make_model(clip, replace(CFG, max_words=16)).train()
    tokens = Tokenizer("tcmgc-clip-tiny", 16)(["a red circle moves left", "a blue square", "green", "a b c d e"])
    text = model.encode_text(tokens)
    video = model.encode_video(torch.randn(4, CFG.num_frames, CFG.embed_dim))
    out = model(text, video)
    tcmgc_loss(out["logits"], out["parts"], 0.5)["loss"].backward()
    no_grad = [
        n
        for n, p in model.named_parameters()
        if not n.startswith("clip.visual") and (p.grad is None or p.grad.abs().sum() == 0)
    ]
    assert no_grad == []


def test_sentence_feature_equals_open_clip_text_embedding(clip: torch.nn.Module) -> None:
    from tcmgc_cli.model.encoder import Tokenizer, encode_tokens

    tokens = Tokenizer("tcmgc-clip-tiny", 16)(["a red circle moves left", "two shapes"])
    words, sentence = encode_tokens(clip, tokens)
    assert words.shape == (2, 16, 32)
    torch.testing.assert_close(sentence, clip.encode_text(tokens), rtol=1e-5, atol=1e-5)


def test_temporal_encoder_starts_from_clip_text_blocks_when_widths_match(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reference's init (method doc, section 3): layers from CLIP's first text blocks, positions from its table."""
    import json

    import open_clip

    from tcmgc_cli.model.factory import ModelSpec, create_model, resolve_spec

    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}  # fmt: skip
    (tmp_path / "tcmgc-test-width32.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path)
    tiny = resolve_spec("tcmgc-tiny")
    model = create_model(ModelSpec(tiny.name, "tcmgc-test-width32", None, tiny.config))
    text, temporal = model.clip.transformer.resblocks, model.head.temporal
    assert len(temporal.resblocks) == 2
    for ours, theirs in zip(temporal.resblocks, text, strict=False):
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(value, theirs.state_dict()[key], rtol=0, atol=0)
    rows = temporal.frame_position_embeddings.weight.shape[0]
    torch.testing.assert_close(temporal.frame_position_embeddings.weight, model.clip.positional_embedding[:rows])
    import logging

    from tcmgc_cli.model import factory

    factory._TOLD.clear()  # said once per process: an earlier test may have heard it
    logger = logging.getLogger("tcmgc_cli")
    logger.addHandler(caplog.handler)  # the command line may have stopped propagation to the root logger
    try:
        with caplog.at_level("INFO", logger="tcmgc_cli"):
            create_model(tiny)  # text width 64, joint width 32: cannot seed it, and says so
    finally:
        logger.removeHandler(caplog.handler)
    assert "starts from random weights" in caplog.text


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("dim", [-1, -2, 0])
def test_top_values_equals_a_sorted_python_list(k: int, dim: int) -> None:
    """The tournament selection against the obvious oracle: sort each line in Python, take the first k."""
    g = torch.Generator().manual_seed(k)
    x = torch.randint(-3, 4, (5, 7, 9), generator=g).float()  # many ties
    x[x == -3] = float("-inf")  # masked entries
    got = reorganize.top_values(x, k, dim)
    moved = x.movedim(dim, -1)
    want = torch.tensor(
        [sorted(line, reverse=True)[: min(k, len(line))] for line in moved.reshape(-1, moved.shape[-1]).tolist()]
    ).view(*moved.shape[:-1], -1)
    assert torch.equal(got, want.movedim(-1, dim))


def test_integer_masks_mean_what_the_reference_means(clip: torch.nn.Module) -> None:
    """The reference passes 0/1 integer frame masks: they must score exactly as the boolean mask does."""
    from tcmgc_cli.model.features import as_bool_mask

    cfg = replace(CFG, mask_padding=True)
    model = make_model(clip, cfg)
    g = torch.Generator().manual_seed(4)
    frames = torch.randn(3, cfg.num_frames, cfg.embed_dim, generator=g)
    mask = torch.ones(3, cfg.num_frames, dtype=torch.bool)
    mask[0, 5:], mask[2, 2:] = False, False
    as_bool = model.encode_video(frames, mask, factorized=True)
    as_int = model.encode_video(frames, mask.long(), factorized=True)
    torch.testing.assert_close(as_int.temporal, as_bool.temporal, rtol=0, atol=0)
    assert as_int.mask is not None and as_int.mask.dtype == torch.bool
    with pytest.raises(ValueError, match="booleans or 0/1"):
        as_bool_mask(torch.tensor([[0, 2]]))


def test_keep_by_mass_against_a_loop() -> None:
    """keep_rule "mass": of the top k, the fewest whose softmax(lambda x) share of the whole vector reaches p."""
    import math

    g = torch.Generator().manual_seed(8)
    x = torch.randn(5, 9, generator=g) * 0.05
    lam, k, p = 100.0, 4, 0.8
    values = reorganize.top_values(x, k, -1)
    got, ok = reorganize.by_mass(values, None, x, lam, p)
    for row in range(5):
        line = x[row].tolist()
        total = sum(math.exp(lam * v) for v in line)
        ranked = sorted(line, reverse=True)[:k]
        kept, mass = [], 0.0
        for v in ranked:
            kept.append(mass < p)
            mass += math.exp(lam * v) / total
        assert ok[row].tolist() == kept
        assert got[row].tolist() == pytest.approx([v if keep else 0.0 for v, keep in zip(ranked, kept, strict=True)])


def test_keep_by_mass_scores_factorized_equals_direct_and_full_mass_is_fixed(clip: torch.nn.Module) -> None:
    torch.manual_seed(2)
    text = TextFeatures(torch.randn(3, CFG.max_words, CFG.embed_dim), torch.randn(3, CFG.embed_dim))
    frames = torch.randn(4, CFG.num_frames, CFG.embed_dim)
    flat = replace(CFG, isa_lambda=20.0)  # at 100 the top entry holds nearly all the mass and ISA is nearly a max
    fixed = make_model(clip, flat)
    mass = make_model(clip, replace(flat, keep_rule="mass", keep_mass=0.3))
    whole = make_model(clip, replace(flat, keep_rule="mass", keep_mass=1.0))
    with torch.no_grad():
        direct = mass(text, mass.encode_video(frames))["logits"]
        fast = mass.score_chunked(text, mass.encode_video(frames, factorized=True), 2, 3)["logits"]
        base = fixed(text, fixed.encode_video(frames))["logits"]
        all_kept = whole(text, whole.encode_video(frames))["logits"]
    torch.testing.assert_close(fast, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(all_kept, base, rtol=1e-6, atol=1e-6)  # p = 1 keeps every one of the k
    assert not torch.allclose(direct, base, atol=1e-4)  # p = 0.3 keeps fewer, and that shows


UNITS_CFG = replace(CFG, phrases=True, snippets=True, phrase_words=3, snippet_frames=2, keep_rate=0.34)


def test_phrases_and_snippets_against_loops(clip: torch.nn.Module) -> None:
    """The paper's open question 2: phrases (spans of 3 tokens) and snippets (windows of 2 frames) as units, every
    similarity of every pair against the method's equations written as loops."""
    model = make_model(clip, UNITS_CFG)
    assert model.cfg.active_similarities == ("vs", "vw", "sf", "fw", "vp", "pf", "cs", "cw", "cp")
    text, frames = features(2, 3, UNITS_CFG)
    video = model.encode_video(frames)
    parts = model(text, video)["parts"]  # the training path (direct LVA)
    for t in range(2):
        for v in range(3):
            want = oracle.unit_pair_scores(model, text, t, video, v)
            assert parts[t, v].tolist() == pytest.approx(list(want.values()), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        UNITS_CFG,
        replace(UNITS_CFG, mask_padding=True),
        replace(UNITS_CFG, text_conditioning=False),
        replace(UNITS_CFG, snippets=False),
        replace(UNITS_CFG, phrases=False, keep_rule="mass"),
        replace(UNITS_CFG, reorganize=False),
    ],
)
def test_phrases_and_snippets_factorized_equals_direct(clip: torch.nn.Module, cfg: ModelConfig) -> None:
    model = make_model(clip, cfg)
    text, frames = features(5, 7, cfg)
    mask = torch.ones(7, cfg.num_frames, dtype=torch.bool)
    mask[0, 3:] = False  # a short video: padding in the last snippets
    mask[1, 1:] = False
    with torch.no_grad():
        direct = model(text, model.encode_video(frames, mask))
        fast = model.score_chunked(text, model.encode_video(frames, mask, factorized=True), 2, 3, parts=True)
    assert direct["parts"].shape[-1] == len(cfg.active_similarities)
    torch.testing.assert_close(fast["parts"], direct["parts"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast["logits"], direct["logits"], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(fast["logits"]).all()


def test_phrase_means_and_masks() -> None:
    from tcmgc_cli.model.features import phrase_any, phrase_means

    words = torch.arange(7.0)[None, :, None].expand(1, 7, 2)  # token i = (i, i)
    assert phrase_means(words, 3)[0, :, 0].tolist() == [1.0, 4.0, 6.0]  # (0+1+2)/3, (3+4+5)/3, 6/1
    assert phrase_any(torch.tensor([[True, True, False, False, False, False, False]]), 3).tolist() == [
        [True, False, False]
    ]


HIERARCHY_CFG = replace(CFG, hierarchy=True, keep_rate=0.34)


@pytest.mark.parametrize("inputs", ["conditioned", "agnostic"])
def test_hierarchy_against_loops(clip: torch.nn.Module, inputs: str) -> None:
    """The paper's open question 3: three levels merged by similarity on each side, level by level, against the
    method's equations written as loops; TC-MGC's four scores are unchanged beside them."""
    cfg = replace(HIERARCHY_CFG, hierarchy_inputs=inputs)
    model = make_model(clip, cfg)
    assert model.cfg.active_similarities == ("vs", "vw", "sf", "fw", "hw", "hp", "hs")
    text, frames = features(2, 3, cfg)
    video = model.encode_video(frames)
    parts = model(text, video)["parts"]  # the training path (direct LVA)
    for t in range(2):
        for v in range(3):
            assert parts[t, v, :4].tolist() == pytest.approx(oracle.pair_scores(model, text, t, video, v), rel=1e-4)
            want = oracle.hierarchy_pair_scores(model, text, t, video, v)
            assert parts[t, v, 4:].tolist() == pytest.approx(want, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        HIERARCHY_CFG,
        replace(HIERARCHY_CFG, hierarchy_inputs="agnostic"),
        replace(HIERARCHY_CFG, mask_padding=True),
        replace(HIERARCHY_CFG, mask_padding=True, hierarchy_inputs="agnostic"),
        replace(HIERARCHY_CFG, text_conditioning=False, hierarchy_inputs="agnostic"),
        replace(HIERARCHY_CFG, phrases=True, snippets=True, keep_rule="mass", hierarchy_merge=4),
    ],
)
def test_hierarchy_factorized_equals_direct(clip: torch.nn.Module, cfg: ModelConfig) -> None:
    """Retrieval's factorized path forms no word-conditioned pool, yet gives the hierarchy's scores exactly: the
    merged units' cosines follow from the first level's and from the pools' Gram matrix over the per-video basis."""
    model = make_model(clip, cfg)
    text, frames = features(5, 7, cfg)
    text.mask = torch.arange(cfg.max_words)[None] <= torch.tensor([3, 5, 11, 7, 2])[:, None]  # (Q, L) short captions
    mask = torch.ones(7, cfg.num_frames, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 1:] = False
    with torch.no_grad():
        direct = model(text, model.encode_video(frames, mask))
        fast = model.score_chunked(text, model.encode_video(frames, mask, factorized=True), 2, 3, parts=True)
    torch.testing.assert_close(fast["parts"], direct["parts"], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(fast["logits"]).all() and direct["parts"].shape[-1] == len(cfg.active_similarities)


def test_hierarchy_segments_against_loops() -> None:
    """The merge cuts at the least similar neighbours, first where counting units meet ones that do not."""
    from tcmgc_cli.model.hierarchy import segments

    g = torch.Generator().manual_seed(3)
    adjacent = torch.rand(4, 11, generator=g) * 2 - 1  # (4, n-1) cosines of 12 units
    valid = torch.arange(12)[None] < torch.tensor([12, 5, 1, 9])[:, None]  # (4, 12)
    for parts in (1, 2, 4, 12):
        got, got_valid = segments(adjacent, parts, None), segments(adjacent, parts, valid)
        for row in range(4):
            assert got[row].tolist() == oracle.segments(adjacent[row].tolist(), parts)
            assert got_valid[row].tolist() == oracle.segments(adjacent[row].tolist(), parts, valid[row].tolist())
    assert oracle.segments([0.9, -0.5, 0.8, 0.1], 3) == [0, 0, 1, 1, 2]  # the two least alike gaps are the cuts


def test_hierarchy_settings_are_checked() -> None:
    from tcmgc_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="use one of conditioned, agnostic"):
        ModelConfig(hierarchy=True, hierarchy_inputs="raw")
    with pytest.raises(ConfigError, match="needs LVA"):
        ModelConfig(hierarchy=True, text_conditioning=False)
    with pytest.raises(ConfigError, match="hierarchy_merge must be at least 2"):
        ModelConfig(hierarchy_merge=1)
