"""Training objective: symmetric InfoNCE over the batch plus alpha x SDR (variance of the four scores of positives)."""

import torch
import torch.nn.functional as F


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE on a (B, B) score matrix whose diagonal holds the positives (no extra temperature)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def sdr(parts: torch.Tensor) -> torch.Tensor:
    """Mean over positives (the diagonal of (B, B, K)) of the unbiased variance of their K scores."""
    positives = torch.diagonal(parts, dim1=0, dim2=1).T  # (B, B, K) -> (K, B) -> (B, K)
    if positives.shape[-1] < 2:
        return positives.new_zeros(())
    return positives.var(dim=-1, unbiased=True).mean()


def tcmgc_loss(logits: torch.Tensor, parts: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """{"loss": total, "loss_nce": ..., "loss_sdr": ...}; the parts are logged separately."""
    nce, var = info_nce(logits), sdr(parts)
    return {"loss": nce + alpha * var, "loss_nce": nce, "loss_sdr": var}
