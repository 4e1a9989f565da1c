"""Training objective: symmetric InfoNCE over the batch plus alpha x SDR (variance of the K scores of positives).

SDR rules. "variance" (the paper): the unbiased variance of a positive pair's K tau-scaled scores. It asks the
scores to be equal, yet the similarities live on different scales (a sentence-video dot product against an ISA over
kept word similarities), so part of what it penalizes is an offset or scale that InfoNCE cannot care about (any
constant added to one similarity leaves every softmax over pairs unchanged), and pulling those together can work
against the contrast. "standardized": each similarity is first standardized over the batch's B x B pairs (its
mean and standard deviation, held constant in the gradient), and the variance is taken over the standardized
scores of each positive: it penalizes only disagreement about how a positive ranks among the batch's pairs, which
is what the contrast uses, and cannot be lowered by shrinking or shifting one similarity.
"""

import torch
import torch.nn.functional as F


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a (B, B) score matrix whose diagonal holds the positives (no extra temperature)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def sdr(parts: torch.Tensor, rule: str = "variance") -> torch.Tensor:
    """Mean over positives (the diagonal of (B, B, K)) of the unbiased variance of their K scores (see above)."""
    if rule == "standardized":
        flat = parts.reshape(-1, parts.shape[-1]).detach()  # (B*B, K): the batch's pairs
        parts = (parts - flat.mean(0)) / flat.std(0).clamp_min(1e-6)
    positives = torch.diagonal(parts, dim1=0, dim2=1).T  # (B, B, K) -> (K, B) -> (B, K)
    if positives.shape[-1] < 2:
        return positives.new_zeros(())
    return positives.var(dim=-1, unbiased=True).mean()


def tcmgc_loss(
    logits: torch.Tensor, parts: torch.Tensor, alpha: float, rule: str = "variance"
) -> dict[str, torch.Tensor]:
    """{"loss": total, "loss_nce": ..., "loss_sdr": ...}; the parts are logged separately."""
    nce, var = info_nce(logits), sdr(parts, rule)
    return {"loss": nce + alpha * var, "loss_nce": nce, "loss_sdr": var}
