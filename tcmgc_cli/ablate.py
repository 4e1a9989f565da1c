"""Ablation grids: which TC-MGC parts earn their keep. Every variant trains and evaluates on the same cache.

Each axis varies one setting away from the base config (not a cross product): keep rates, SDR weights, components
(each "-x" removes one part, "+x" adds phrases or clips), aggregations, and combinations of similarities each with
SDR off and with each SDR rule. A finished variant leaves `result.json` in its folder and is skipped
on a rerun; an unfinished one resumes from its last epoch checkpoint.

    summary, folder = ablate(expand_variants([0.05, 0.5], [], [], []), [1, 2], DataSource("csv", annotations=csv),
                             model="tcmgc-tiny")
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tcmgc_cli.ablate_plots import plot_all
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.errors import ConfigError
from tcmgc_cli.fileio import write_text_atomic
from tcmgc_cli.metrics import METRIC_KEYS
from tcmgc_cli.runs import TrainSetup, prepare, train_run

COMPONENTS: dict[str, dict[str, Any]] = {
    "full": {},
    "-sr": {"reorganize": False},
    "-lsa": {"aggregation": "mean"},
    "-sdr": {"sdr_alpha": 0.0},
    "-textcond": {"text_conditioning": False},
}
ADDABLE = {"phrases": {"phrases": True}, "clips": {"clips": True}}  # "+x" adds a part: "+phrases+clips" both
EXTRA = ("pairs_per_s", "score_variance")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig keys
    components: str = "full"

    @property
    def slug(self) -> str:
        return self.name.replace("=", "-").replace(",", "_").lstrip("-").replace("/", "_") or "full"


def parse_floats(text: str | None, what: str) -> list[float]:
    if not text:
        return []
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated numbers, e.g. 0.05,0.1,0.5 (got {text!r}).") from None


def component(name: str) -> dict[str, Any]:
    """The overrides of a component: "-x" removes a part, "+x" (or "+x+y") adds parts."""
    if name in COMPONENTS:
        return COMPONENTS[name]
    parts = name.split("+")[1:] if name.startswith("+") else []
    if not parts or any(p not in ADDABLE for p in parts):
        valid = [*COMPONENTS, *(f"+{a}" for a in ADDABLE), "+phrases+clips"]
        raise ConfigError(f"unknown component {name!r}: use {', '.join(valid)}.")
    return {k: v for p in parts for k, v in ADDABLE[p].items()}


def parse_combinations(text: str | None) -> list[tuple[str, ...]]:
    """--similarities "vs,vw;vs,fw": combinations of the four similarities, separated by ';'."""
    from tcmgc_cli.config import SIMILARITIES

    if not text:
        return []
    combos = [tuple(n.strip() for n in c.split(",") if n.strip()) for c in text.split(";")]
    if any(not c for c in combos):
        raise ConfigError(f"--similarities {text!r} holds an empty combination: write e.g. \"vs,vw;vs,fw\" "
                          f"with names from {', '.join(SIMILARITIES)}.")  # fmt: skip
    unknown = sorted({n for c in combos for n in c} - set(SIMILARITIES))
    if unknown:
        raise ConfigError(f"unknown similarity {', '.join(unknown)} in --similarities: use {', '.join(SIMILARITIES)}.")
    return list(dict.fromkeys(combos))


def sdr_variants(combinations: list[tuple[str, ...]], rules: list[str]) -> list[Variant]:
    """Each combination with SDR off and with each SDR rule (the base config's weight)."""
    from tcmgc_cli.config import SDR_RULES

    unknown = [r for r in rules if r not in SDR_RULES]
    if unknown:
        raise ConfigError(f"unknown SDR rule(s) {unknown}: use {', '.join(SDR_RULES)}.")
    out = []
    for combo in combinations:
        sims = ",".join(combo)
        out.append(Variant(f"sims={sims} sdr=off", {"similarities": combo, "sdr_alpha": 0.0}))
        out += [Variant(f"sims={sims} sdr={r}", {"similarities": combo, "sdr_rule": r}) for r in rules]
    if not combinations:
        out += [Variant(f"sdr_rule={r}", {"sdr_rule": r}) for r in rules if r != "variance"]
    return out


def sdr_effects(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """For each combination of the --similarities grid: R@1 (mean, std) with SDR off and with each rule, and the
    rules whose mean R@1 is below SDR off's (where SDR hurts)."""
    rows = summary[summary["variant"].str.startswith("sims=")]
    out: list[dict[str, Any]] = []
    for combo, group in rows.groupby(rows["variant"].str.split(" ").str[0], sort=False):
        by_rule = {
            v.split("sdr=")[1]: (r["t2v_R@1"], r["t2v_R@1_std"])
            for v, (_, r) in zip(group["variant"], group.iterrows(), strict=True)
        }
        off = by_rule.get("off")
        lowers = [rule for rule, (mean, _) in by_rule.items() if off is not None and rule != "off" and mean < off[0]]
        out.append({"similarities": combo.removeprefix("sims="), "t2v_R@1": by_rule, "sdr_lowers_R@1": lowers})
    return out


def expand_variants(
    keep_rates: list[float], sdr_alphas: list[float], components: list[str], aggregations: list[str],
    keep_masses: list[float] | None = None, combinations: list[tuple[str, ...]] | None = None,
    sdr_rules: list[str] | None = None,
) -> list[Variant]:  # fmt: skip
    """The variants of the grid, "full" first; each axis value changes one setting of the base config."""
    bad = [r for r in keep_rates if not 0 < r <= 1]
    if bad:
        raise ConfigError(f"keep rates must be in (0, 1]: {bad} is not; e.g. --keep-rates 0.05,0.1,0.5.")
    overrides = {c: component(c) for c in components}
    bad_agg = [a for a in aggregations if a not in ("lsa", "mean", "softmax")]
    if bad_agg:
        raise ConfigError(f"unknown aggregation(s) {bad_agg}: use lsa, mean, softmax.")
    if any(a < 0 for a in sdr_alphas):
        raise ConfigError("SDR weights must be at least 0.")
    if any(not 0 < p <= 1 for p in keep_masses or []):
        raise ConfigError("keep masses must be in (0, 1], e.g. --keep-masses 0.5,0.9.")
    variants = [Variant("full")]
    variants += [Variant(f"keep_rate={r:g}", {"keep_rate": r}) for r in keep_rates]
    variants += [Variant(f"sdr_alpha={a:g}", {"sdr_alpha": a}) for a in sdr_alphas]
    variants += [Variant(c, overrides[c], c) for c in components if c != "full"]
    variants += [Variant(f"aggregation={a}", {"aggregation": a}) for a in aggregations]
    variants += [Variant(f"keep_mass={p:g}", {"keep_rule": "mass", "keep_mass": p}) for p in keep_masses or []]
    if combinations or sdr_rules:
        variants += sdr_variants(combinations or [], sdr_rules or ["variance"])
    return list({v.name: v for v in variants}.values())


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per variant: settings, seeds, metric means and their _std over seeds; the best R@1 marked."""
    df = pd.DataFrame(results)
    keys = [k for k in (*METRIC_KEYS, *EXTRA) if k in df.columns]
    rows = []
    for name, group in df.groupby("variant", sort=False):
        row: dict[str, Any] = {
            "variant": name,
            **{
                k: group.iloc[0][k]
                for k in ("keep_rate", "sdr_alpha", "components", "sdr_rule", "similarities")
                if k in group
            },  # fmt: skip
            "keep_mass": group.iloc[0]["keep_mass"] if "keep_mass" in group else None,
        }
        row["seeds"] = sorted(int(s) for s in group["seed"])
        for k in keys:
            row[k] = float(group[k].mean())
            row[f"{k}_std"] = float(group[k].std(ddof=0))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["best"] = out["t2v_R@1"] == out["t2v_R@1"].max()
    out["best_tradeoff"] = best_tradeoff(out, df)
    return out


def best_tradeoff(summary: pd.DataFrame, results: pd.DataFrame) -> pd.Series:
    """Among the keep-rate variants (and the base), the fastest whose R@1 is within one query of the best of them."""
    family = summary["variant"].str.startswith("keep_rate=") | (summary["variant"] == "full")
    mark = pd.Series(False, index=summary.index)
    if family.sum() < 2 or "pairs_per_s" not in summary or "num_queries" not in results:
        return mark
    rows = summary[family]
    one_query = 100.0 / float(results["num_queries"].max())
    good = rows[rows["t2v_R@1"] >= rows["t2v_R@1"].max() - one_query - 1e-9]
    mark[good["pairs_per_s"].idxmax()] = True
    return mark


def run_grid(
    variants: list[Variant], seeds: list[int], out_dir: Path, run_one: Callable[[Variant, int, Path], dict[str, Any]],
    on_event: Callable[[str], None] = lambda msg: None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run every (variant, seed) not finished yet; returns every result, finished earlier or now."""
    results = []
    for variant in variants:
        for seed in seeds:
            folder = out_dir / f"{variant.slug}-s{seed}"
            done = folder / "result.json"
            if done.is_file():
                on_event(f"{variant.name} seed {seed}: done earlier, skipped")
                results.append(json.loads(done.read_text()))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            result = {
                "variant": variant.name,
                "seed": seed,
                "components": variant.components,
                **run_one(variant, seed, folder),
            }
            result["seconds"] = time.perf_counter() - start
            write_text_atomic(done, json.dumps(result))
            on_event(f"{variant.name} seed {seed}: t2v R@1 {result['t2v_R@1']:.1f} ({result['seconds']:.0f} s)")
            results.append(result)
    return results


def evaluate_variant(run_dir: Path, setup: TrainSetup, test: Split) -> dict[str, Any]:
    """Metrics of a variant's best checkpoint, its scoring speed (pairs/s) and its positive-pair score variance."""
    from tcmgc_cli.checkpoint import load_trained
    from tcmgc_cli.scoring import measure_split

    return measure_split(load_trained(run_dir, str(setup.device)), setup.cache, test, setup.cfg.eval_chunk)[1]


def ablate(
    variants: list[Variant], seeds: list[int], source: DataSource, *, split: str = "test", output: Path | None = None,
    model: str = "tcmgc-b32", pretrained: str | None = None, cache: Path | None = None, config: Path | None = None,
    sets: list[str] | None = None, train: dict[str, Any] | None = None, device: str = "auto",
    on_event: Callable[[str], None] = lambda msg: None,
) -> tuple[pd.DataFrame, Path]:  # fmt: skip
    """Train and evaluate every (variant, seed) not finished yet in `output` (default:
    <workspace>/ablations/<model>); writes ablation.csv and ablation.png there; returns the summary and the folder."""
    import dataclasses

    from tcmgc_cli.workspace import workspace_dir

    setup = prepare(source, model, pretrained=pretrained, cache=cache, config=config, sets=sets or [], train=train,
                    device=device)  # fmt: skip
    test = source.split(split, setup.cache)
    folder = output or workspace_dir() / "ablations" / model

    def run_one(variant: Variant, seed: int, run_dir: Path) -> dict[str, Any]:
        spec = setup.spec(variant.overrides)
        train_run(setup, spec, dataclasses.replace(setup.cfg, seed=seed), run_dir, resume=True, announce=False)
        mass = spec.config.keep_mass if spec.config.keep_rule == "mass" else None
        return {**evaluate_variant(run_dir, setup, test), "keep_rate": spec.config.keep_rate,
                "sdr_alpha": spec.config.sdr_alpha, "keep_mass": mass, "sdr_rule": spec.config.sdr_rule,
                "similarities": ",".join(spec.config.active_similarities)}  # fmt: skip

    results = run_grid(variants, seeds, folder, run_one, on_event)
    summary = summarize(results)
    summary.to_csv(folder / "ablation.csv", index=False)
    facts = plot_all(summary, results, folder, {(v.name, s): v.slug for v in variants for s in seeds})
    facts["sdr_effects"] = sdr_effects(summary)
    write_text_atomic(folder / "ablation.json", json.dumps(facts, indent=1))
    return summary, folder
