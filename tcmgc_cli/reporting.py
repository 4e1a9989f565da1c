"""Rich renderables built from plain data."""

from rich.table import Table

METRIC_COLUMNS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def metrics_table(metrics: dict[str, float], title: str = "") -> Table:
    """One row per direction (t2v, v2t) with R@1/5/10 in percent and median/mean rank."""
    table = Table("direction", *METRIC_COLUMNS, title=title or None)
    for direction in ("t2v", "v2t"):
        if f"{direction}_R@1" in metrics:
            table.add_row(direction, *(f"{metrics[f'{direction}_{k}']:.1f}" for k in METRIC_COLUMNS))
    return table
