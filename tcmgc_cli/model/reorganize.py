"""Similarity Reorganization (SR): shorten similarity vectors to their k largest entries, in descending order.

Every function takes values with an optional validity mask of the same shape (None = all valid). Invalid entries
rank last and come back marked invalid (their value zeroed), so that the aggregation can ignore them. SR only ever
needs the few largest entries, never a full sort: `top_values` (a tournament, for the k <= 4 of the defaults) or
torch.topk select them.
"""

import torch

Masked = tuple[torch.Tensor, torch.Tensor | None]


def _fill(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    return x if valid is None else x.masked_fill(~valid, float("-inf"))


def _top(x: torch.Tensor, k: int, dim: int, masked: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    values, index = torch.topk(x, min(k, x.shape[dim]), dim=dim, largest=True, sorted=True)
    return (*_marked(values, masked), index)


def _marked(values: torch.Tensor, masked: bool) -> Masked:
    if not masked:
        return values, None
    ok = torch.isfinite(values)
    return values.masked_fill(~ok, 0.0), ok


# sorting networks (compare-exchange pairs) for the few values a tournament round leaves
_NETWORKS = {1: (), 2: ((0, 1),), 3: ((0, 1), (1, 2), (0, 1)), 4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2))}


def top_values(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """torch.topk(x, k, dim).values (descending, ties kept) for k <= 4 as a tournament of elementwise max and min:
    the two halves' sorted top lists A and B merge into the top of both as max(A_i, B_{k+1-i}) (a bitonic merge)
    then a sorting network. Exactly topk's values, several times faster than topk for short rows on CPU."""
    dim, k = dim % x.ndim, min(k, x.shape[dim])
    if k > 4:
        return torch.topk(x, k, dim=dim).values
    ranks = [x]  # ranks[i]: the (i+1)-th largest value of each block along dim; blocks of 1 to begin with
    while ranks[0].shape[dim] > 1:
        if ranks[0].shape[dim] % 2:
            pad = torch.full_like(ranks[0].narrow(dim, 0, 1), float("-inf"))
            ranks = [torch.cat([r, pad], dim) for r in ranks]
        pairs = [r.unflatten(dim, (-1, 2)) for r in ranks]  # type: ignore[no-untyped-call]  # (..., m, ...) -> (..., m/2, 2, ...): two blocks merge
        a, b = [p.select(dim + 1, 0) for p in pairs], [p.select(dim + 1, 1) for p in pairs]
        n = min(2 * len(ranks), k)
        merged = []
        for i in range(n):  # max(A_i, B_{n-1-i}), a missing rank being -inf
            j = n - 1 - i
            merged.append(a[i] if j >= len(b) else b[j] if i >= len(a) else torch.maximum(a[i], b[j]))
        for i, j in _NETWORKS[n]:
            merged[i], merged[j] = torch.maximum(merged[i], merged[j]), torch.minimum(merged[i], merged[j])
        ranks = merged
    return torch.cat(ranks, dim)


def keep(x: torch.Tensor, k: int, valid: torch.Tensor | None = None) -> Masked:
    """(..., n) -> the k largest entries, descending: (..., k)."""
    return _marked(top_values(_fill(x, valid), k, -1), valid is not None)


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
    values = top_values(_fill(m, valid), k_rows, -2)  # (..., k_rows, n_cols), -inf kept for ranking
    return _marked(top_values(values, k_cols, -1), valid is not None)  # (..., k_rows, k_cols)


def by_mass(
    values: torch.Tensor, ok: torch.Tensor | None, full: torch.Tensor, lam: float, mass: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """An input-dependent keep rate: of the kept `values` (..., k), descending, keep the fewest whose share of the
    softmax(lam * full) mass over the whole vector `full` (..., n) reaches `mass` (at least one); the others are
    marked invalid (zeroed), so that the aggregation ignores them."""
    finite = torch.where(torch.isfinite(full), lam * full, torch.full_like(full, float("-inf")))
    share = torch.exp(lam * values - torch.logsumexp(finite, -1, keepdim=True))  # (..., k) softmax weights
    before = torch.cumsum(share, -1) - share  # mass of the entries ranked above each one
    keep_it = before < mass
    ok = keep_it if ok is None else ok & keep_it
    return values.masked_fill(~ok, 0.0), ok
