"""Rich renderables and plots the commands print or write, built from plain data."""

from pathlib import Path

import numpy as np
from rich.table import Table

METRIC_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def metrics_table(metrics: dict[str, float], title: str = "") -> Table:
    """One row per direction (t2v, v2t) with R@1/5/10 in percent and median/mean rank."""
    table = Table("direction", *METRIC_COLUMNS, title=title or None)
    for direction in ("t2v", "v2t"):
        if f"{direction}_R@1" in metrics:
            table.add_row(direction, *(f"{metrics[f'{direction}_{k}']:.1f}" for k in METRIC_COLUMNS))
    return table


def attention_table(words: list[str], weights: np.ndarray, times: np.ndarray, title: str = "") -> Table:
    """Words x frames, each cell shaded by its attention weight (rows sum to 1)."""
    table = Table("word", *(f"{t:.1f}s" for t in times), title=title or None)
    for word, row in zip(words, weights, strict=True):
        peak = float(row.max()) or 1.0
        cells = []
        for w in row:
            level = int(round(255 * (1 - float(w) / peak)))
            cells.append(f"[on rgb(255,{level},{level})]{float(w):.2f}[/]")
        table.add_row(word, *cells)
    return table


def attention_png(words: list[str], weights: np.ndarray, times: np.ndarray, path: Path, title: str = "") -> None:
    """The same heat map as a PNG (matplotlib, without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(times), 1 + 0.35 * len(words)))
    ax.imshow(weights, cmap="Reds", aspect="auto")
    ax.set_xticks(range(len(times)), [f"{t:.1f}" for t in times], rotation=90)
    ax.set_yticks(range(len(words)), words)
    ax.set_xlabel("frame time (s)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
