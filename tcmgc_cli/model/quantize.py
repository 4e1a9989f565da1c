"""`--precision int8`: a copy of an image tower whose linear layers run in int8 (torch's dynamic quantization: int8
weights, activations quantized per batch as they come), on a CPU.

torch's nn.MultiheadAttention keeps its input projection as a bare matrix and its output projection in a class that
dynamic quantization skips, so a ViT's attention would stay float32: a third of its linear arithmetic. Each one is
first split into plain linear layers around scaled dot-product attention (the same function, tested), so that every
linear layer of the tower is quantized: ViT-B/32 encodes 42.5-44.7 frames a second on this project's CPU against
26.9-27.4 with attention left in float32 (README, Benchmarks).
"""

import copy
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SplitAttention(nn.Module):
    """nn.MultiheadAttention (self-attention, one embedding size) as a qkv linear layer, scaled dot-product attention
    and an output linear layer: the same outputs, in layers that dynamic quantization takes."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        e = mha.embed_dim
        self.heads, self.batch_first = mha.num_heads, mha.batch_first
        self.qkv = nn.Linear(e, 3 * e, bias=mha.in_proj_bias is not None)
        self.out = nn.Linear(e, e, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            self.qkv.weight.copy_(mha.in_proj_weight)
            self.out.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                self.qkv.bias.copy_(mha.in_proj_bias)
            if mha.out_proj.bias is not None:
                self.out.bias.copy_(mha.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
        if kwargs.get("key_padding_mask") is not None or not (query is key is value):
            raise ValueError("SplitAttention stands in for self-attention without a padding mask only")
        x = query if self.batch_first else query.transpose(0, 1)  # (B, N, E)
        b, n, e = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, E/H)
        mask = attn_mask  # torch's attention masks: True or -inf where not attended; SDPA's bool: True where attended
        if mask is not None:
            mask = ~mask if mask.dtype == torch.bool else mask.to(x.dtype)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # (B, H, N, E/H)
        o = self.out(o.transpose(1, 2).reshape(b, n, e))  # (B, H, N, E/H) -> (B, N, E)
        return (o if self.batch_first else o.transpose(0, 1)), None


def split_attention(module: nn.Module) -> nn.Module:
    """`module` with every self-attention nn.MultiheadAttention in it replaced by a SplitAttention (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.MultiheadAttention) and child._qkv_same_embed_dim:
            setattr(module, name, SplitAttention(child))
        else:
            split_attention(child)
    return module


def int8_tower(visual: nn.Module) -> nn.Module:
    """A copy of the tower with its attention split and every nn.Linear quantized to int8 (the original untouched).
    torch's eager quantization API warns that it is deprecated in favour of torchao; it is what runs here."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tower = split_attention(copy.deepcopy(visual))
        quantized: nn.Module = quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    return quantized
