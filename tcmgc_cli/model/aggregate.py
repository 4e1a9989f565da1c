"""Turning similarity vectors into scores: Interactive Similarity Aggregation (ISA) and Linear Softmax Aggregation."""

import torch
from torch import nn


def _softmax(z: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """softmax over the valid entries of each row; a row with none valid gets all zeros (never NaN, in either pass)."""
    if valid is None:
        return torch.softmax(z, dim=-1)
    empty = ~valid.any(-1, keepdim=True)  # (..., 1)
    z = z.masked_fill(~valid, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(z, dim=-1) * valid


class ISA(nn.Module):
    """ISA_A(x) = sum_i w_i x_i with a = softmax(lambda x), b = a A, w = softmax(lambda b); A (n, n) starts at I.

    form "xclip" is X-CLIP's single softmax times matrix: sum_i (softmax(lambda x) A)_i x_i.
    """

    def __init__(self, n: int, lam: float = 100.0, form: str = "tcmgc") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(n))
        self.lam = lam
        self.form = form

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., n) -> (...,)."""
        a = _softmax(self.lam * x, valid)
        b = a @ self.weight
        w = b if self.form == "xclip" else _softmax(self.lam * b, valid)
        x = x if valid is None else x.masked_fill(~valid, 0.0)
        return (w * x).sum(-1)


class Aggregation(nn.Module):
    """Combine the K similarity scores of a pair. "lsa": beta = softmax(g C), S = sum beta g (C (K, K) starts at I);
    "mean": plain average; "softmax": softmax(g)-weighted average."""

    def __init__(self, k: int, mode: str = "lsa") -> None:
        super().__init__()
        self.mode = mode
        self.weight = nn.Parameter(torch.eye(k)) if mode == "lsa" else None

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """g (..., K) -> (...,)."""
        if self.mode == "mean":
            return g.mean(-1)
        logits = g @ self.weight if self.weight is not None else g
        return (torch.softmax(logits, dim=-1) * g).sum(-1)
