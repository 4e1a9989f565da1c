"""Shared by the benchmarks (run as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

import numpy as np
import torch


class LogitScaleOnly(torch.nn.Module):
    """Stands in for CLIP where only scoring runs: the scoring path reads nothing but the logit scale (tau = 100)."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(np.log(100.0), dtype=torch.float32))
