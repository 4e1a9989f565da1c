"""Running an ablation grid: every (variant, seed) trains and is evaluated on the same cache, then the summary (mean
and std over seeds), its figures and its facts. A finished variant leaves `result.json` in its folder and is skipped
on a rerun; an unfinished one resumes from its last epoch checkpoint.

    result = ablate(grid(keep_rates="0.05,0.5"), [1, 2], DataSource("csv", annotations=csv), model="tcmgc-tiny")
    result.summary, result.folder, result.facts["sdr_effects"]
"""

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tcmgc_cli.ablation.grid import Variant
from tcmgc_cli.ablation.plots import plot_all
from tcmgc_cli.checkpoint import load_trained
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.defaults import DEVICE, MODEL
from tcmgc_cli.evaluation.retrieval import measure_split
from tcmgc_cli.fileio import write_text_atomic
from tcmgc_cli.metrics import METRIC_KEYS
from tcmgc_cli.training import TrainSetup, prepare, train_run
from tcmgc_cli.workspace import ablations_dir

EXTRA = ("pairs_per_s", "score_variance")
SETTINGS = ("keep_rate", "sdr_alpha", "components", "sdr_rule", "similarities", "keep_mass")  # a row's settings


@dataclass
class Ablation:
    """A finished grid: one summary row per variant, the folder it is kept in, and its figures' facts."""

    summary: pd.DataFrame
    folder: Path
    facts: dict[str, Any]

    def rows(self) -> list[dict[str, Any]]:
        """The summary as JSON-ready rows (`tcmgc ablate --json`): settings, seeds, each metric and its _std."""
        out = []
        for _, r in self.summary.iterrows():
            row = {"variant": r["variant"], **{k: _plain(r.get(k)) for k in SETTINGS}, "seeds": r["seeds"],
                   "best": bool(r["best"]), "best_tradeoff": bool(r["best_tradeoff"])}  # fmt: skip
            for k in (*METRIC_KEYS, *EXTRA):
                row[k], row[f"{k}_std"] = r[k], r[f"{k}_std"]
            out.append(row)
        return out


def _plain(value: Any) -> Any:
    """A cell as JSON wants it: NaN (an unset keep mass) as None."""
    return None if value is None or value != value else value


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
    return measure_split(load_trained(run_dir, str(setup.device)), setup.cache, test, setup.cfg.eval_chunk)[1]


def ablate(
    variants: list[Variant], seeds: list[int], source: DataSource, *, split: str = "test", output: Path | None = None,
    model: str = MODEL, pretrained: str | None = None, cache: Path | None = None, config: Path | None = None,
    sets: list[str] | None = None, train: dict[str, Any] | None = None, device: str = DEVICE,
    on_event: Callable[[str], None] = lambda msg: None,
) -> Ablation:  # fmt: skip
    """Train and evaluate every (variant, seed) not finished yet in `output` (default: the workspace's ablations
    folder for `model`); writes ablation.csv, ablation.png and ablation.json there."""
    setup = prepare(source, model, pretrained=pretrained, cache=cache, config=config, sets=sets or [], train=train,
                    device=device)  # fmt: skip
    test = source.split(split, setup.cache, setup.cache.path)
    folder = output or ablations_dir(model)

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
    return Ablation(summary, folder, facts)
