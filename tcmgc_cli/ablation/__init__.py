"""Ablation grids: which TC-MGC parts earn their keep (`tcmgc ablate`). The variants of a grid are `grid.py`'s,
running them and summarizing `runs.py`'s, the figures `plots.py`'s.

    from tcmgc_cli.ablation import ablate, grid
    result = ablate(grid(components="full,-sdr"), [1, 2, 3], DataSource("csv", annotations=csv), model="tcmgc-tiny")
"""

from tcmgc_cli.ablation.grid import DEFAULT_COMPONENTS, Variant, expand_variants, grid, parse_combinations, parse_seeds
from tcmgc_cli.ablation.runs import EXTRA, Ablation, ablate, run_grid, summarize

__all__ = [
    "DEFAULT_COMPONENTS", "EXTRA", "Ablation", "Variant", "ablate", "expand_variants", "grid", "parse_combinations",
    "parse_seeds", "run_grid", "summarize",
]  # fmt: skip
