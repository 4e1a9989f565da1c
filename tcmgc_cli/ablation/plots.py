"""The figures of an ablation grid, one panel per question the grid can answer (ablation.png), and their facts.

1. keep rate vs accuracy and cost: t2v R@1 (left axis) and milliseconds per 1,000 x 1,000 scores (right axis)
   against r; input-dependent keep rules (keep_mass=p) as hollow markers at their cap r;
2. SDR over training: the mean variance of the four similarities on the validation positives, epoch by epoch
   (each run's metrics log), for each SDR weight;
3. SDR weight vs variance vs accuracy: R@1 against the final variance, one point per (variant, seed), with the
   Pearson correlation across them.
A grid that varies none of these gets a bar chart of R@1 per variant. Aggregations are compared in the table.
"""

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcmgc_cli.checkpoint.run_folder import RunFolder


def _sdr_family(names: pd.Series) -> pd.Series:
    return names.str.startswith("sdr_alpha=") | names.isin(["full", "-sdr"])


def _epoch_variance(folder: Path) -> list[float]:
    return [float(r["score_variance"]) for r in RunFolder(folder).epochs() if "score_variance" in r]


def sdr_correlation(results: pd.DataFrame) -> float | None:
    """Pearson r between final score variance and t2v R@1 over the SDR variants' runs (None with < 3 points)."""
    rows = results[_sdr_family(results["variant"])]
    if len(rows) < 3 or rows["score_variance"].std() == 0 or rows["t2v_R@1"].std() == 0:
        return None
    return float(np.corrcoef(rows["score_variance"], rows["t2v_R@1"])[0, 1])


def plot_all(
    summary: pd.DataFrame, results: list[dict[str, Any]], folder: Path, slugs: dict[tuple[str, int], str]
) -> dict[str, Any]:
    """Write ablation.png into `folder`; returns the figures' facts (panels, correlation, best trade-off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = pd.DataFrame(results)
    names = summary["variant"]
    panels = []
    if names.str.startswith(("keep_rate=", "keep_mass=")).any():
        panels.append("keep_rate")
    if (names.str.startswith("sdr_alpha=") | (names == "-sdr")).any():
        panels += ["sdr_training", "sdr_tradeoff"]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.8), squeeze=False)
    facts: dict[str, Any] = {"panels": panels or ["variants"]}
    for ax, panel in zip(axes[0], panels or ["variants"], strict=True):
        if panel == "keep_rate":
            _keep_rate(ax, summary)
            best = summary[summary["best_tradeoff"]]["variant"].tolist()
            facts["best_tradeoff"] = best[0] if best else None
        elif panel == "sdr_training":
            _sdr_training(ax, runs, folder, slugs)
        elif panel == "sdr_tradeoff":
            facts["sdr_correlation"] = _sdr_tradeoff(ax, runs)
        else:
            ax.bar(range(len(summary)), summary["t2v_R@1"], yerr=summary["t2v_R@1_std"], capsize=3)
            ax.set_xticks(range(len(summary)), summary["variant"], rotation=30, ha="right")
            ax.set_ylabel("text-to-video R@1 (%)")
    fig.tight_layout()
    fig.savefig(folder / "ablation.png", dpi=100)
    plt.close(fig)
    return facts


def _keep_rate(ax: Any, summary: pd.DataFrame) -> None:
    fixed = summary[summary["variant"].str.startswith("keep_rate=") | (summary["variant"] == "full")]
    fixed = fixed[fixed["keep_mass"].isna()].sort_values("keep_rate")
    ms = 1e9 / fixed["pairs_per_s"]  # milliseconds per 1,000 x 1,000 scores
    ax.errorbar(fixed["keep_rate"], fixed["t2v_R@1"], yerr=fixed["t2v_R@1_std"], marker="o", capsize=3, color="C0")
    cost = ax.twinx()
    cost.plot(fixed["keep_rate"], ms, marker="s", linestyle="--", color="C1")
    masses = summary[summary["variant"].str.startswith("keep_mass=")]
    for _, row in masses.iterrows():
        ax.plot(row["keep_rate"], row["t2v_R@1"], marker="o", markerfacecolor="none", color="C2")
        ax.annotate(f"mass {row['keep_mass']:g}", (row["keep_rate"], row["t2v_R@1"]), fontsize=7)
        cost.plot(row["keep_rate"], 1e9 / row["pairs_per_s"], marker="s", markerfacecolor="none", color="C2")
    ax.set_xlabel("keep rate r")
    ax.set_ylabel("text-to-video R@1 (%)", color="C0")
    cost.set_ylabel("ms per 1,000 x 1,000 scores", color="C1")
    ax.grid(alpha=0.3)


def _sdr_training(ax: Any, runs: pd.DataFrame, folder: Path, slugs: dict[tuple[str, int], str]) -> None:
    family = runs[_sdr_family(runs["variant"])]
    for alpha, group in family.groupby("sdr_alpha"):
        curves = [_epoch_variance(folder / f"{slugs.get((r['variant'], r['seed']), r['variant'])}-s{r['seed']}")
                  for _, r in group.iterrows()]  # fmt: skip
        curves = [c for c in curves if c]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        ax.plot(range(1, length + 1), mean, marker=".", label=f"alpha {alpha:g}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("score variance on positives")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _sdr_tradeoff(ax: Any, runs: pd.DataFrame) -> float | None:
    family = runs[_sdr_family(runs["variant"])]
    for alpha, group in family.groupby("sdr_alpha"):
        ax.scatter(group["score_variance"], group["t2v_R@1"], label=f"alpha {alpha:g}")
    r = sdr_correlation(runs)
    ax.set_xscale("log")
    ax.set_xlabel("final score variance on positives")
    ax.set_ylabel("text-to-video R@1 (%)")
    ax.set_title(
        "Pearson r = " + ("n/a" if r is None or math.isnan(r) else f"{r:.2f}") + f" ({len(family)} runs)", fontsize=9
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return r
