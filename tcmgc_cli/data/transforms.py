"""Frames (T, H, W, 3) uint8 -> encoder input, following the encoder's own open_clip preprocessing config.

Everything runs on whole uint8 batches with torch ops: resize (bicubic, antialiased, like PIL), center crop,
then float normalization right before the encoder.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """The subset of open_clip's preprocess config that video frames need."""

    size: int = 224  # square crop side, pixels
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)  # per RGB channel, in [0, 1] units
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    interpolation: str = "bicubic"  # "bicubic" or "bilinear"
    resize_mode: str = "shortest"  # "shortest": short side to size, then center crop; "squash": stretch to size

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> "Preprocess":
        size = cfg["size"]
        side = int(size if isinstance(size, int) else size[0])
        mode = cfg.get("resize_mode", "shortest")
        if mode not in ("shortest", "squash"):
            mode = "shortest"
        interp = cfg.get("interpolation", "bicubic")
        return cls(side, tuple(cfg["mean"]), tuple(cfg["std"]), interp if interp == "bilinear" else "bicubic", mode)


def resize_crop(frames: np.ndarray, pp: Preprocess) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, S, S, 3) uint8, S = pp.size."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)
    h, w = x.shape[-2:]
    if pp.resize_mode == "squash":
        new_h, new_w = pp.size, pp.size
    else:
        scale = pp.size / min(h, w)
        new_h, new_w = max(pp.size, round(h * scale)), max(pp.size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=pp.interpolation, antialias=True)
    top, left = (new_h - pp.size) // 2, (new_w - pp.size) // 2
    x = x[:, :, top : top + pp.size, left : left + pp.size]
    return x.permute(0, 2, 3, 1).contiguous().numpy()  # (T, 3, S, S) -> (T, S, S, 3)


def normalize(frames: torch.Tensor, pp: Preprocess, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(..., S, S, 3) uint8 -> (..., 3, S, S) float, scaled to [0, 1] then mean/std normalized."""
    x = frames.movedim(-1, -3).to(dtype) / 255.0  # (..., S, S, 3) -> (..., 3, S, S)
    mean = torch.tensor(pp.mean, dtype=dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(pp.std, dtype=dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std
