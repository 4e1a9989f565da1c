import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.checkpoint import import_reference, load_into, read_checkpoint, save_checkpoint
from tcmgc_cli.cli import app
from tcmgc_cli.config import ModelConfig
from tcmgc_cli.errors import CheckpointError
from tcmgc_cli.model.factory import ModelSpec, create_model, resolve_spec
from tcmgc_cli.model.losses import info_nce, sdr, tcmgc_loss
from tcmgc_cli.model.tcmgc import TcmgcModel, head_parameter_counts

REFERENCE_RENAMES = {
    "head.temporal.frame_position_embeddings.": "frame_position_embeddings.",
    "head.temporal.resblocks.": "transformerClip.resblocks.",
    "head.lva.layer_norm": "conditional_transformer.pool_frames.layer_norm",
    "head.lva.linear_proj.": "conditional_transformer.pool_frames.linear_proj.",
    "head.global_mat_weight": "global_mat_weight",
    "head.local_mat_weight": "local_mat_weight",
    "head.isa_vw.weight": "attentive_word_logit_weight",
    "head.isa_sf.weight": "concat_frame_word_logit_weight",
    "head.isa_fw_words.weight": "attentive_word_mat_weight",
    "head.isa_fw_frames.weight": "attentive_frame_word_mat_weight",
    "head.isa_fw_u.weight": "attentive_frame_word_mat_weight2",
    "head.isa_fw_z.weight": "attentive_word_mat_weight2",
    "head.aggregation.weight": "logit_weight",
}


def reference_layout(model: TcmgcModel) -> dict[str, torch.Tensor]:
    """The state dict as the reference training script saves it (method doc, section 15)."""
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in REFERENCE_RENAMES.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                break
        out[key] = value.clone()
    d = model.cfg.embed_dim
    out["conditional_transformer.pool_frames.cross_attn.q_proj.weight"] = torch.zeros(d, d)  # present, unused
    out["similarity_dense.weight"] = torch.zeros(1)  # an older branch's key, ignored
    return out


def scores(model: TcmgcModel) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(1, 400, (3, model.cfg.max_words), generator=g)
    tokens[:, -1] = 49407
    frames = torch.randn(4, model.cfg.num_frames, model.cfg.embed_dim, generator=g)
    return model.eval().score_chunked(model.encode_text(tokens), model.encode_video(frames, factorized=True))["logits"]


@pytest.fixture(scope="module")
def trained() -> tuple[TcmgcModel, ModelSpec]:
    spec = resolve_spec("tcmgc-tiny")
    model = create_model(spec)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, spec


def test_own_checkpoint_round_trip(tmp_path: Path, trained: tuple[TcmgcModel, ModelSpec]) -> None:
    model, spec = trained
    save_checkpoint(tmp_path / "c.pt", model, spec)
    payload = read_checkpoint(tmp_path / "c.pt")
    fresh = create_model(ModelSpec.from_dict(payload["spec"]))
    load_into(fresh, payload["state_dict"], "c.pt")
    torch.testing.assert_close(scores(fresh), scores(model))


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path: Path, trained: tuple[TcmgcModel, ModelSpec]) -> None:
    model, spec = trained
    other = create_model(resolve_spec("tcmgc-tiny", overrides={"keep_rate": 0.5}))
    with pytest.raises(CheckpointError, match="another model config.*other shapes"):
        load_into(other, model.state_dict(), "c.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "bad.pt")


def test_reference_state_dict_reproduces_scores(trained: tuple[TcmgcModel, ModelSpec]) -> None:
    model, spec = trained
    fresh = create_model(spec)
    import_reference(fresh, reference_layout(model))
    torch.testing.assert_close(scores(fresh), scores(model))


def test_reference_import_errors_name_keys_and_keep_rate(trained: tuple[TcmgcModel, ModelSpec]) -> None:
    model, _ = trained
    state = reference_layout(model)
    with pytest.raises(CheckpointError, match="cannot place: mystery.weight"):
        import_reference(create_model(resolve_spec("tcmgc-tiny")), {**state, "mystery.weight": torch.zeros(1)})
    wrong_k = create_model(resolve_spec("tcmgc-tiny", overrides={"keep_rate": 0.5}))
    with pytest.raises(CheckpointError, match=r"keeps k = 4 of Nw = 16 .*keep rate 0.28125") as err:
        import_reference(wrong_k, state)
    suggested = float(str(err.value).split("--set model.keep_rate=")[1].rstrip(").").split()[0])
    import_reference(create_model(resolve_spec("tcmgc-tiny", overrides={"keep_rate": suggested})), state)  # it works
    table = {**state, "frame_position_embeddings.weight": torch.zeros(77, model.cfg.embed_dim)}
    with pytest.raises(CheckpointError, match="model.temporal_positions=77"):
        import_reference(create_model(resolve_spec("tcmgc-tiny")), table)


def test_suggested_keep_rate_gives_back_k_for_every_k() -> None:
    """floor(Nw * r) must give k back, e.g. k = 7 of 64 (7/64 rounded to 3 decimals, 0.109, gives 6)."""
    import math

    from tcmgc_cli.checkpoint import implied_keep_rate

    for nw in (16, 32, 64, 77, 100):
        for k in range(1, nw + 1):
            assert math.floor(nw * implied_keep_rate(k, nw)) == k, (nw, k)


def test_losses_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    logits, parts = torch.randn(4, 4, generator=g) * 3, torch.randn(4, 4, 4, generator=g)
    row = [-math.log(math.exp(logits[i, i]) / sum(math.exp(x) for x in logits[i].tolist())) for i in range(4)]
    col = [-math.log(math.exp(logits[i, i]) / sum(math.exp(x) for x in logits[:, i].tolist())) for i in range(4)]
    assert float(info_nce(logits)) == pytest.approx((sum(row) / 4 + sum(col) / 4) / 2, rel=1e-5)
    variances = []
    for i in range(4):
        v = parts[i, i].tolist()
        mean = sum(v) / 4
        variances.append(sum((x - mean) ** 2 for x in v) / 3)
    assert float(sdr(parts)) == pytest.approx(sum(variances) / 4, rel=1e-5)
    out = tcmgc_loss(logits, parts, 0.5)
    assert float(out["loss"]) == pytest.approx(float(out["loss_nce"]) + 0.5 * float(out["loss_sdr"]))


def test_new_module_sizes_at_vit_b32_match_the_method_doc() -> None:
    counts = head_parameter_counts(ModelConfig())
    block = 4 * 512 * 512 + 4 * 512 + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    assert counts["temporal"] == 4 * block + 77 * 512
    assert counts["lva"] == 512 * 512 + 512 + 3 * 2 * 512  # about 0.27 M
    assert counts["G"] == counts["L"] == 512 * 512
    assert counts["isa"] == 9 + 16 + 4 * 9  # k = 3: A1, A2 (k+1), B1..B4
    assert counts["lsa"] == 16
    no_sr = head_parameter_counts(replace(ModelConfig(), reorganize=False))
    assert no_sr["isa"] == 6 * 32 * 32


def test_models_command_prints_head_sizes() -> None:
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    import json

    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["tcmgc-b32"]["head_parameters"]["lva"] == 265_728


# The method doc's section 15 table, role by role: reference key -> the module of ours that plays that role.
DOC_TABLE = {
    "frame_position_embeddings.weight": "head.temporal.frame_position_embeddings.weight",  # position table
    "conditional_transformer.pool_frames.layer_norm1.weight": "head.lva.layer_norm1.weight",  # LVA's LN1
    "conditional_transformer.pool_frames.layer_norm2.bias": "head.lva.layer_norm2.bias",  # LVA's LN2
    "conditional_transformer.pool_frames.layer_norm3.weight": "head.lva.layer_norm3.weight",  # LVA's LN3
    "conditional_transformer.pool_frames.linear_proj.weight": "head.lva.linear_proj.weight",  # LVA's linear layer
    "global_mat_weight": "head.global_mat_weight",  # G (video-sentence)
    "local_mat_weight": "head.local_mat_weight",  # L (frame-word)
    "attentive_word_logit_weight": "head.isa_vw.weight",  # A1: video-word ISA, [k, k]
    "concat_frame_word_logit_weight": "head.isa_sf.weight",  # A2: sentence-frame ISA (keep and fuse), [k+1, k+1]
    "attentive_word_mat_weight": "head.isa_fw_words.weight",  # B1: over words, per frame column
    "attentive_frame_word_mat_weight": "head.isa_fw_frames.weight",  # B2: over frames, per word row
    "attentive_frame_word_mat_weight2": "head.isa_fw_u.weight",  # B3: over the frame-indexed vector u
    "attentive_word_mat_weight2": "head.isa_fw_z.weight",  # B4: over the word-indexed vector z
    "logit_weight": "head.aggregation.weight",  # C (LSA)
}


def test_reference_file_built_from_the_method_doc_table_lands_role_by_role() -> None:
    """A reference state dict written from the doc's key table (not from our own mapping), with distinct random
    values: every tensor must land in the module that plays its role, and the doc's shapes must be ours."""
    model = create_model(resolve_spec("tcmgc-tiny"))
    cfg, d = model.cfg, model.cfg.embed_dim
    k = int(cfg.max_words * cfg.keep_rate)  # k = floor(Nw * r)
    g = torch.Generator().manual_seed(11)
    shapes = {"frame_position_embeddings.weight": (cfg.temporal_positions, d),
              "conditional_transformer.pool_frames.layer_norm1.weight": (d,),
              "conditional_transformer.pool_frames.layer_norm2.bias": (d,),
              "conditional_transformer.pool_frames.layer_norm3.weight": (d,),
              "conditional_transformer.pool_frames.linear_proj.weight": (d, d),
              "global_mat_weight": (d, d), "local_mat_weight": (d, d), "attentive_word_logit_weight": (k, k),
              "concat_frame_word_logit_weight": (k + 1, k + 1), "attentive_word_mat_weight": (k, k),
              "attentive_frame_word_mat_weight": (k, k), "attentive_frame_word_mat_weight2": (k, k),
              "attentive_word_mat_weight2": (k, k), "logit_weight": (4, 4)}  # fmt: skip
    state = {key: torch.randn(shape, generator=g) for key, shape in shapes.items()}
    for key, value in model.clip.state_dict().items():  # the CLIP towers: `clip.` + CLIP's own names
        state[f"clip.{key}"] = value.clone()
    rest = {"conditional_transformer.pool_frames.layer_norm1.bias", "conditional_transformer.pool_frames.layer_norm2.weight",
            "conditional_transformer.pool_frames.layer_norm3.bias", "conditional_transformer.pool_frames.linear_proj.bias"}  # fmt: skip
    for key in rest:
        state[key] = torch.randn(d, generator=g)
    for n, block in enumerate(model.head.temporal.resblocks):  # transformerClip.resblocks.N.* in CLIP text-block names
        for key, value in block.state_dict().items():
            state[f"transformerClip.resblocks.{n}.{key}"] = torch.randn(value.shape, generator=g)
    state["conditional_transformer.pool_frames.cross_attn.q_proj.weight"] = torch.zeros(d, d)  # present, unused
    import_reference(model, state)
    ours = model.state_dict()
    for theirs, mine in DOC_TABLE.items():
        assert torch.equal(ours[mine], state[theirs]), f"{theirs} did not land in {mine}"
    assert torch.equal(
        ours["head.temporal.resblocks.1.attn.in_proj_weight"], state["transformerClip.resblocks.1.attn.in_proj_weight"]
    )


def test_import_reference_command_makes_a_run_that_evaluates_and_resumes(sample_cache: Path, tmp_path: Path) -> None:
    """A reference checkpoint file -> `tcmgc import-reference` -> the same scores, and `train --resume` continues."""
    from typer.testing import CliRunner

    from tcmgc_cli.checkpoint import load_trained
    from tests.helpers import small_dataset

    sizes = {"temporal_positions": 77, "keep_rate": 0.25}
    source = create_model(resolve_spec("tcmgc-tiny", overrides=sizes))
    torch.manual_seed(9)
    with torch.no_grad():
        for p in source.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(reference_layout(source), path)
    sets = ["--set", "model.max_words=16", "--set", "model.num_frames=8", "--set", "train.epochs=2"]
    run = tmp_path / "run"
    runner = CliRunner()
    wrong = runner.invoke(app, ["import-reference", str(path), "--keep-rate", "0.5", "--model", "tcmgc-tiny",
                                "--output", str(run), *sets])  # fmt: skip
    assert wrong.exit_code == 1 and "0.28125" in wrong.output and not run.exists()
    done = runner.invoke(app, ["import-reference", str(path), "--keep-rate", "0.25", "--model", "tcmgc-tiny",
                               "--output", str(run), *sets])  # fmt: skip
    assert done.exit_code == 0, done.output
    torch.testing.assert_close(scores(load_trained(run, "cpu").model), scores(source))
    data = small_dataset(tmp_path)
    resumed = runner.invoke(app, ["train", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny",
                                  "--cache", str(sample_cache), "--output", str(run), "--resume", "--json",
                                  "--set", "model.temporal_positions=77", "--set", "model.keep_rate=0.25", *sets])  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["epochs"] == 2
    # its image tower is the one sample_cache was extracted with: the cached features serve, no frames needed
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["import-reference", str(path), "--keep-rate", "0.25", "--model", "tcmgc-tiny",
                               "--output", str(fresh), *sets]).exit_code == 0  # fmt: skip
    evaluate = ["evaluate", "--dataset", "csv", "--annotations", str(data), "--cache", str(sample_cache), "--json"]
    same = runner.invoke(app, [*evaluate, "--checkpoint", str(fresh)])
    assert same.exit_code == 0, same.output
    with torch.no_grad():
        source.clip.visual.proj.add_(0.01)  # another tower: its features must come from frames
    torch.save(reference_layout(source), path)
    other = tmp_path / "other"
    assert runner.invoke(app, ["import-reference", str(path), "--keep-rate", "0.25", "--model", "tcmgc-tiny",
                               "--output", str(other), *sets]).exit_code == 0  # fmt: skip
    refused = runner.invoke(app, [*evaluate, "--checkpoint", str(other)])
    assert refused.exit_code == 1 and "--store-frames" in refused.output
