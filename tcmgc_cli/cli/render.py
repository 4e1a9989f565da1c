"""Rich renderables and plots the commands print or write, built from plain data."""

from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape
from rich.table import Column, Table

METRIC_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def metrics_table(metrics: dict[str, float], title: str = "") -> Table:
    """One row per direction (t2v, v2t) with R@1/5/10 in percent and median/mean rank."""
    table = Table("direction", *METRIC_COLUMNS, title=title or None)
    for direction in ("t2v", "v2t"):
        if f"{direction}_R@1" in metrics:
            table.add_row(direction, *(f"{metrics[f'{direction}_{k}']:.1f}" for k in METRIC_COLUMNS))
    return table


def hits_table(query: str, hits: list[Any], scorer: str) -> Table:
    """Search results, one row a video: its id whole, paths relative to here when they are under it, folded (never
    cut) where the terminal is narrow."""
    how = "CLIP similarity, no trained checkpoint" if scorer == "clip" else "TC-MGC"
    table = Table("rank", Column("video", no_wrap=True), "score", Column("moment (s)", no_wrap=True), "other moments (s)",
                  Column("path", overflow="fold"), title=f"“{escape(query)}” ({how})")  # fmt: skip
    for h in hits:
        others = ", ".join(f"{m['start_sec']:.1f}–{m['end_sec']:.1f}" for m in h.moments[1:])
        table.add_row(str(h.rank), escape(h.video_id), f"{h.score:.3f}", f"{h.start_sec:.1f}–{h.end_sec:.1f}", others,
                      escape(_here(h.path)))  # fmt: skip
    return table


def _here(path: str) -> str:
    """A path relative to the current folder when it lies under it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def models_table(rows: list[dict[str, Any]], width: int) -> Table:
    """The model configs and the size of what TC-MGC adds; the per-module breakdown where the terminal is wide."""
    wide = width >= 110
    detail = ("temporal", "LVA", "G+L", "ISA", "LSA") if wide else ()
    table = Table(Column("model", no_wrap=True), Column("weights", no_wrap=True), "frames", "words", *detail,
                  "head params")  # fmt: skip
    for r in rows:
        c = r["head_parameters"]
        parts = (c["temporal"], c["lva"], c["G"] + c["L"], c["isa"], c["lsa"]) if wide else ()
        table.add_row(r["name"], str(r["pretrained"] or "random init"), str(r["num_frames"]), str(r["max_words"]),
                      *(f"{n:,}" for n in parts), f"{c['total']:,}")  # fmt: skip
    return table


def moments_table(metrics: dict[str, float], title: str = "") -> Table:
    """Moment retrieval at a glance: inside each query's video, and over the whole collection (corpus), one row each,
    under short headers that stay whole at 80 columns."""
    table = Table("where", "R1@0.5", "R1@0.7", "R10@0.5", "mAP@0.5", "mAP@0.75", "mAP", title=title or None)
    inside = ("R1@0.5", "R1@0.7", None, "mAP@0.5", "mAP@0.75", "mAP")
    corpus = ("corpus_R1@0.5", "corpus_R1@0.7", "corpus_R10@0.5", None, None, None)
    for name, keys in (("in video", inside), ("corpus", corpus)):
        table.add_row(name, *(f"{metrics[k]:.1f}" if k else "" for k in keys))
    return table


def attention_check_table(metrics: dict[str, Any]) -> Table:
    """Where the attention lands against the true windows, beside what attention spread evenly would give."""
    table = Table("measure", "observed", "chance", "ratio",
                  title=f"attention ({metrics['attention_source']}) over {metrics['attention_queries']} queries")  # fmt: skip
    in_span, uniform = metrics["attention_in_span"], metrics["attention_uniform"]
    pointing, chance = metrics["word_pointing"], metrics["word_pointing_chance"]
    table.add_row("mass in span", f"{in_span:.3f}", f"{uniform:.3f}", f"{metrics['attention_ratio']:.2f}")
    table.add_row("word pointing", f"{pointing:.3f}", f"{chance:.3f}", f"{pointing / chance:.2f}" if chance else "")
    table.add_row("on padding", f"{metrics['attention_on_padding']:.3f}", "", "")
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


def attention_grid_png(examples: list[dict[str, Any]], path: Path, columns: int = 2) -> None:
    """Each query's word-by-frame attention (the sentence's first), the frames inside its true window boxed in green
    and their times in bold: the picture of the paper's second check."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = max(1, -(-len(examples) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.2 * rows), squeeze=False)
    for ax, item in zip(axes.flat, examples, strict=False):
        weights = np.array([item["sentence"], *item["weights"]])  # (1 + words, T')
        ax.imshow(weights, cmap="Reds", aspect="auto", vmin=0)
        ax.set_yticks(range(len(weights)), ["[sentence]", *item["words"]], fontsize=7)
        ax.set_xticks(range(len(item["times"])), [f"{t:g}" for t in item["times"]], fontsize=7)
        for tick, inside in zip(ax.get_xticklabels(), item["inside"], strict=True):
            tick.set_fontweight("bold" if inside else "normal")
        for start, stop in _runs(item["inside"]):  # each stretch of frames inside a true window
            ax.add_patch(Rectangle((start - 0.5, -0.5), stop - start, len(weights), fill=False, edgecolor=TRUE_WINDOW,
                                   linewidth=2.5))  # fmt: skip
        ax.set_title(f"{item['qid']}: {item['query'][:60]}", fontsize=8)
        ax.set_xlabel("frame time (s); true window boxed", fontsize=7)
    for ax in list(axes.flat)[len(examples) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TRUE_WINDOW = "#00a000"  # the box around the frames inside a true window


def _runs(flags: list[bool]) -> list[tuple[int, int]]:
    """[start, stop) of each run of True."""
    out, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out
