"""The reference recipe's optimization: which parameters train, the optimizers, the learning-rate schedule."""

import math
from collections.abc import Iterable
from typing import Any

import torch

from tcmgc_cli.config import TrainConfig


def warmup_cosine(progress: float, warmup: float) -> float:
    """Linear warm-up over the first `warmup` of training, then 0.5 (1 + cos(pi * progress)) over the whole run."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BertAdam(torch.optim.Optimizer):
    """The Adam of the reference codebase: no bias correction, each parameter tensor's gradient clipped to norm
    `max_grad_norm` on its own, and weight decay added to the update (decoupled from the moments)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float = 1.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "max_grad_norm": max_grad_norm}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                grad = p.grad
                if group["max_grad_norm"] > 0:
                    norm = grad.norm()
                    if norm > group["max_grad_norm"]:
                        grad = grad * (group["max_grad_norm"] / norm)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])


def param_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], lr: float, clip_lr: float, weight_decay: float, faithful: bool
) -> list[dict[str, Any]]:
    """Four groups: CLIP / new modules x decayed / not. The reference decays every parameter whose name lacks
    "bias" (so LayerNorm weights too); the modern mode also spares LayerNorm weights and other 1-d tensors."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        no_decay = "bias" in name if faithful else ("bias" in name or p.ndim < 2)
        groups.setdefault((name.startswith("clip."), no_decay), []).append(p)
    return [
        {
            "params": ps,
            "lr": clip_lr if is_clip else lr,
            "initial_lr": clip_lr if is_clip else lr,
            "weight_decay": 0.0 if no_decay else weight_decay,
        }  # fmt: skip
        for (is_clip, no_decay), ps in sorted(groups.items())
    ]


def freeze(model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Switch off the gradients of what `cfg.freeze` keeps fixed (none, CLIP's image tower, or all of CLIP)."""
    frozen = {"none": (), "visual": ("clip.visual.",), "all": ("clip.",)}[cfg.freeze]
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith(frozen) if frozen else True)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer over the trainable parameters: the reference's BertAdam, or AdamW."""
    faithful = cfg.optimizer == "bert"
    groups = param_groups(model.named_parameters(), cfg.lr, cfg.lr * cfg.clip_lr_scale, cfg.weight_decay, faithful)
    if faithful:
        return BertAdam(groups, lr=cfg.lr, max_grad_norm=cfg.grad_clip)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
