import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.ablation import Variant, expand_variants, parse_combinations, run_grid, summarize
from tcmgc_cli.cli import app
from tcmgc_cli.errors import ConfigError
from tcmgc_cli.evaluation.retrieval import score_variance
from tests.helpers import small_dataset

runner = CliRunner()


def test_expand_variants_one_axis_at_a_time() -> None:
    got = expand_variants([0.05, 0.5], [0.0], ["full", "-sr", "-textcond"], ["softmax"])
    assert [v.name for v in got] == [
        "full",
        "keep_rate=0.05",
        "keep_rate=0.5",
        "sdr_alpha=0",
        "-sr",
        "-textcond",
        "aggregation=softmax",
    ]
    assert got[4].overrides == {"reorganize": False} and got[1].overrides == {"keep_rate": 0.05}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"keep_rates": [0.0]}, r"\(0, 1\]"),
        ({"keep_rates": [1.5]}, r"\(0, 1\]"),
        ({"components": ["-foo"]}, "unknown component"),
        ({"aggregations": ["max"]}, "unknown aggregation"),
    ],
)
def test_bad_grids(kwargs: dict[str, list[object]], message: str) -> None:
    args = {"keep_rates": [], "sdr_alphas": [], "components": [], "aggregations": [], **kwargs}
    with pytest.raises(ConfigError, match=message):
        expand_variants(**args)  # type: ignore[arg-type]


def test_score_variance_is_the_sdr_quantity() -> None:
    parts = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]], [[9.0, 9.0, 9.0, 9.0], [2.0, 2.0, 4.0, 4.0]]])
    # positives: text 0 -> video 0 (var of 1,2,3,4 = 5/3), text 1 -> video 1 (var of 2,2,4,4 = 4/3)
    assert score_variance(parts, np.array([0, 1])) == pytest.approx((5 / 3 + 4 / 3) / 2)


def test_summary_means_stds_and_best() -> None:
    rows = [
        {
            "variant": "full",
            "seed": 1,
            "keep_rate": 0.1,
            "sdr_alpha": 0.5,
            "components": "full",
            "t2v_R@1": 10.0,
            "pairs_per_s": 5.0,
        },
        {
            "variant": "full",
            "seed": 2,
            "keep_rate": 0.1,
            "sdr_alpha": 0.5,
            "components": "full",
            "t2v_R@1": 20.0,
            "pairs_per_s": 7.0,
        },
        {
            "variant": "-sr",
            "seed": 1,
            "keep_rate": 0.1,
            "sdr_alpha": 0.5,
            "components": "-sr",
            "t2v_R@1": 12.0,
            "pairs_per_s": 3.0,
        },
    ]
    s = summarize(rows)
    full = s[s["variant"] == "full"].iloc[0]
    assert full["t2v_R@1"] == 15.0 and full["t2v_R@1_std"] == 5.0 and full["seeds"] == [1, 2] and bool(full["best"])
    assert not bool(s[s["variant"] == "-sr"].iloc[0]["best"])


def test_finished_variants_are_skipped(tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []

    def run_one(v: Variant, seed: int, folder: Path) -> dict[str, float]:
        calls.append((v.name, seed))
        if v.name == "-sr" and seed == 2 and len(calls) < 5:
            raise KeyboardInterrupt  # killed mid-grid
        return {"t2v_R@1": float(seed)}

    variants = [Variant("full"), Variant("-sr", {"reorganize": False}, "-sr")]
    with pytest.raises(KeyboardInterrupt):
        run_grid(variants, [1, 2], tmp_path, run_one)
    results = run_grid(variants, [1, 2], tmp_path, run_one)
    assert calls == [("full", 1), ("full", 2), ("-sr", 1), ("-sr", 2), ("-sr", 2)]
    assert len(results) == 4 and (tmp_path / "sr-s2" / "result.json").is_file()


@pytest.mark.slow
def test_ablate_cli_on_sample_video(sample_cache: Path, tmp_path: Path) -> None:
    data = small_dataset(tmp_path)
    out = tmp_path / "grid"
    args = ["ablate", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(sample_cache),
            "--output", str(out), "--components", "full,-lsa,+hierarchy,+hierarchy-agnostic", "--keep-rates", "0.5", "--epochs",
            "1", "--set", "train.batch_size=16"]  # fmt: skip
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"full", "keep_rate=0.5", "-lsa", "+hierarchy", "+hierarchy-agnostic"}
    for r in rows.values():
        assert {
            "variant",
            "keep_rate",
            "sdr_alpha",
            "components",
            "seeds",
            "t2v_R@1",
            "t2v_R@1_std",
            "v2t_MnR",
            "pairs_per_s",
            "score_variance",
        } <= set(r)
        assert r["pairs_per_s"] > 0 and r["score_variance"] >= 0
    assert rows["keep_rate=0.5"]["keep_rate"] == 0.5 and rows["-lsa"]["components"] == "-lsa"
    assert (out / "ablation.csv").is_file() and (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    for name, inputs in (("+hierarchy", "conditioned"), ("+hierarchy-agnostic", "agnostic")):
        model = json.loads((out / f"{name}-s42" / "config.json").read_text())["spec"]["model"]
        assert model["hierarchy"] and model["hierarchy_inputs"] == inputs
    again = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert again.exit_code == 0 and again.output.count("skipped") == 5
    table = again.output[again.output.index("ablation (") :]
    assert "…" not in table and all(f"{name} " in table for name in rows)  # every variant whole at 80 columns
    bad = runner.invoke(app, ["ablate", "--keep-rates", "0,0.5"])
    assert bad.exit_code == 2 and "(0, 1]" in bad.output


@pytest.mark.slow
def test_ablate_answers_the_papers_questions_with_figures(sample_cache: Path, tmp_path: Path) -> None:
    """Keep rates with cost, an input-dependent keep rule, SDR weights over training and against variance."""
    data = small_dataset(tmp_path)
    out = tmp_path / "grid"
    args = ["ablate", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(sample_cache),
            "--output", str(out), "--keep-rates", "0.125,0.5", "--keep-masses", "0.5", "--sdr-alphas", "0,1",
            "--epochs", "2", "--set", "train.batch_size=16", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["variant"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"full", "keep_rate=0.125", "keep_rate=0.5", "keep_mass=0.5", "sdr_alpha=0", "sdr_alpha=1"}
    assert rows["keep_mass=0.5"]["keep_mass"] == 0.5 and rows["full"]["keep_mass"] is None
    assert sum(r["best_tradeoff"] for r in rows.values()) == 1
    facts = json.loads((out / "ablation.json").read_text())
    assert facts["panels"] == ["keep_rate", "sdr_training", "sdr_tradeoff"] and "sdr_correlation" in facts
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    epochs = [json.loads(x) for x in (out / "sdr_alpha-0-s42" / "metrics.jsonl").read_text().splitlines()]
    assert [e["score_variance"] >= 0 for e in epochs if e["kind"] == "epoch"] == [True, True]


def test_units_and_sdr_grids_expand() -> None:
    from tcmgc_cli.ablation import parse_combinations

    got = expand_variants([], [], ["full", "+phrases", "+snippets", "+phrases+snippets", "+clips"], [])
    assert [v.overrides for v in got] == [
        {},
        {"phrases": True},
        {"snippets": True},
        {"phrases": True, "snippets": True},
        {"snippets": True},
    ]  # "+clips": the earlier name of "+snippets"
    hierarchy = expand_variants([], [], ["full", "+hierarchy", "+hierarchy-agnostic"], [])
    assert [v.overrides for v in hierarchy] == [{}, {"hierarchy": True}, {"hierarchy": True,
                                                                         "hierarchy_inputs": "agnostic"}]  # fmt: skip
    combos = parse_combinations("vs,vw; vs,fw ;vs,vw,sf,fw")
    assert combos == [("vs", "vw"), ("vs", "fw"), ("vs", "vw", "sf", "fw")]
    grid = expand_variants([], [], [], [], combinations=combos[:1], sdr_rules=["variance", "standardized"])
    assert [(v.name, v.overrides) for v in grid[1:]] == [
        ("sims=vs,vw sdr=off", {"similarities": ("vs", "vw"), "sdr_alpha": 0.0}),
        ("sims=vs,vw sdr=variance", {"similarities": ("vs", "vw"), "sdr_rule": "variance"}),
        ("sims=vs,vw sdr=standardized", {"similarities": ("vs", "vw"), "sdr_rule": "standardized"}),
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: expand_variants([], [], ["+words"], []), r"unknown component '\+words'.*\+phrases"),
        (lambda: expand_variants([], [], ["+hierarchy-raw"], []), r"\+hierarchy, \+hierarchy-agnostic"),
        (lambda: parse_combinations("vs;;fw"), "empty combination"),
        (lambda: parse_combinations("vs,xx"), "unknown similarity xx.*vs, vw"),
        (lambda: expand_variants([], [], [], [], combinations=[("vs",)], sdr_rules=["calm"]), "unknown SDR rule"),
    ],
)
def test_bad_unit_and_sdr_grids_name_the_valid_ones(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]


def test_standardized_sdr_against_its_definition() -> None:
    from tcmgc_cli.model.losses import sdr

    g = torch.Generator().manual_seed(0)
    parts = torch.randn(4, 4, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + torch.tensor([0.0, 5.0, -3.0])
    flat = parts.reshape(-1, 3)
    z = (parts - flat.mean(0)) / flat.std(0)  # each similarity standardized over the batch's pairs
    want = sum(float(z[i, i].var(unbiased=True)) for i in range(4)) / 4
    assert float(sdr(parts, "standardized")) == pytest.approx(want, rel=1e-5)
    shifted = parts * torch.tensor([1.0, 3.0, 1.0]) + torch.tensor([7.0, 0.0, 0.0])  # a scale or offset of one
    assert float(sdr(shifted, "standardized")) == pytest.approx(want, rel=1e-4)  # similarity changes nothing
    assert float(sdr(shifted)) != pytest.approx(float(sdr(parts)))  # ... where the paper's variance moves


@pytest.mark.slow
def test_ablate_sdr_grid_reports_where_sdr_lowers_r1(sample_cache: Path, tmp_path: Path) -> None:
    data = small_dataset(tmp_path)
    out = tmp_path / "grid"
    args = ["ablate", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(sample_cache),
            "--output", str(out), "--similarities", "vs,vw", "--sdr-rules", "variance,standardized", "--epochs", "1",
            "--set", "train.batch_size=16", "--set", "model.phrases=true"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "vs,vw: t2v R@1 off" in result.output and "SDR lowers R@1 with:" in result.output
    effects = json.loads((out / "ablation.json").read_text())["sdr_effects"]
    assert [e["similarities"] for e in effects] == ["vs,vw"]
    assert set(effects[0]["t2v_R@1"]) == {"off", "variance", "standardized"}
    means = {rule: mean for rule, (mean, _) in effects[0]["t2v_R@1"].items()}
    assert effects[0]["sdr_lowers_R@1"] == [r for r in ("variance", "standardized") if means[r] < means["off"]]
    done = json.loads((out / "sims-vs_vw sdr-standardized-s42" / "result.json").read_text())
    assert done["sdr_rule"] == "standardized" and done["similarities"] == "vs,vw,vp,pf"  # phrases add two
