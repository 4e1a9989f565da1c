"""Similarity Reorganization (SR): shorten similarity vectors to their k largest entries, in descending order.

Every function takes values with an optional validity mask of the same shape (None = all valid). Invalid entries
rank last and come back marked invalid (their value zeroed), so that the aggregation can ignore them. torch.topk
(sorted) does the selection: SR only ever needs the few largest entries, never a full sort.
"""

import torch

Masked = tuple[torch.Tensor, torch.Tensor | None]


def _fill(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return x if valid is None else x.masked_fill(~valid, float("-inf"))


def _top(x: torch.Tensor, k: int, dim: int, masked: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    values, index = torch.topk(x, min(k, x.shape[dim]), dim=dim, largest=True, sorted=True)
    if not masked:
        return values, None, index
    ok = torch.isfinite(values)
    return values.masked_fill(~ok, 0.0), ok, index


def keep(x: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> Masked:
    """(..., n) -> the k largest entries, descending: (..., k)."""
    values, ok, _ = _top(_fill(x, valid), k, -1, valid is not None)
    return values, ok


def keep_and_fuse(x: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> Masked:
    """(..., n) -> the k largest (descending) plus one fused value sum(softmax(rest) * rest): (..., k + 1)."""
    filled = _fill(x, valid)
    values, ok, index = _top(filled, k, -1, valid is not None)
    rest = filled.scatter(-1, index, float("-inf"))  # the n - k entries not kept
    has_rest = torch.isfinite(rest).any(-1, keepdim=True)
    weights = torch.nan_to_num(torch.softmax(rest, dim=-1))
    fused = (weights * torch.where(torch.isfinite(rest), rest, 0.0)).sum(-1, keepdim=True)  # (..., 1)
    out = torch.cat([values, fused], dim=-1)
    if ok is None:
        return out, None
    return out, torch.cat([ok, has_rest], dim=-1)


def bi_keep(m: torch.Tensor, k_rows: int, k_cols: int, valid: torch.Tensor | None = None) -> Masked:
    """Bi-SR on (..., n_rows, n_cols): top k_rows of every column, then top k_cols of every remaining row."""
    masked = valid is not None
    values, _, _ = _top(_fill(m, valid), k_rows, -2, False)  # (..., k_rows, n_cols), -inf kept for ranking
    values, ok, _ = _top(values, k_cols, -1, masked)  # (..., k_rows, k_cols)
    return values, ok
