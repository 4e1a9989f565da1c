"""The temporal encoder over frame features (CLIP4Clip "seqTransf"): X' = Transformer(X + P) + X."""

from collections import OrderedDict

import torch
from torch import nn

PAD_LOGIT = -1e6  # added to attention logits of padded frames (the reference's value, not -inf)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualBlock(nn.Module):
    """A pre-LayerNorm transformer block laid out like CLIP's text blocks (same parameter names and shapes)."""

    def __init__(self, width: int, heads: int, eps: float = 1e-12) -> None:
        """
        Args:
            width: feature width D.
            heads: attention heads; D must divide by it.
            eps: LayerNorm epsilon; the reference's TF-style LayerNorm uses 1e-12.
        """
        super().__init__()
        self.heads = heads
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(), c_proj=nn.Linear(width * 4, width))
        )
        self.ln_2 = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (V, T, D); bias (V * heads, T, T) additive attention logits."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=bias)[0]
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class TemporalEncoder(nn.Module):
    """Learned frame positions plus a small transformer, added back to the input frames."""

    def __init__(self, width: int, layers: int, heads: int, positions: int = 77) -> None:
        super().__init__()
        self.heads = heads
        self.frame_position_embeddings = nn.Embedding(positions, width)
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads) for _ in range(layers))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames (V, T, D) and mask (V, T) bool (True = real frame) -> (V, T, D)."""
        v, t, _ = frames.shape
        x = frames + self.frame_position_embeddings.weight[:t]
        heads = self.heads
        key_bias = (~mask).to(frames.dtype) * PAD_LOGIT  # (V, T)
        bias = key_bias[:, None, None, :].expand(v, heads, t, t).reshape(v * heads, t, t)  # (V*H, T, T)
        for block in self.resblocks:
            x = block(x, bias)
        return x + frames

    @torch.no_grad()
    def init_from_clip_text(self, blocks: nn.ModuleList, positional_embedding: torch.Tensor) -> bool:
        """Copy CLIP's first text blocks and positional table when the widths match (the reference's init)."""
        mine = self.resblocks
        if len(blocks) < len(mine) or positional_embedding.shape[-1] != self.frame_position_embeddings.weight.shape[1]:
            return False
        pairs = [(ours.state_dict(), theirs.state_dict()) for ours, theirs in zip(mine, blocks, strict=False)]
        if any(k not in t or t[k].shape != v.shape for o, t in pairs for k, v in o.items()):
            return False  # another kind of block (other names or shapes): nothing to copy
        for ours, (own, theirs) in zip(mine, pairs, strict=False):
            ours.load_state_dict({k: theirs[k] for k in own})
        rows = min(len(positional_embedding), self.frame_position_embeddings.weight.shape[0])
        self.frame_position_embeddings.weight[:rows] = positional_embedding[:rows]
        return True
