"""CLIP towers through open_clip. This is the only module that imports open_clip.

- `load_clip` builds a named open_clip model with weights from a tag (`openai`), a local file, or a seeded random
  init (pretrained=None, used by the tiny test model), and translates loading failures into one-line errors.
- `FrameEncoder` turns uint8 frames into frame features X (class token after ln_post and the visual projection).
"""

import contextlib
import copy
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tcmgc_cli.data.transforms import Preprocess, normalize
from tcmgc_cli.errors import ConfigError, EncoderError
from tcmgc_cli.model.registry import ENCODER_CONFIG_DIR

RANDOM_INIT_SEED = 0  # pretrained=None builds the same weights every time, so caches stay comparable
MEASURE_FRAMES = 16  # precision "auto" times the tower on this many frames (a few seconds, once per host)
_registered = False


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without a GPU is an error that says so.

    On CPU, denormal floats are flushed to zero: weights and activations decaying towards zero otherwise make CPU
    arithmetic many times slower (the quickstart's epochs grew from 3 s to 8.5 s), for no accuracy.
    """
    local = os.environ.get("LOCAL_RANK")  # under torchrun, each process takes its own GPU
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{local}" if local is not None else "cuda")
    if device in ("auto", "cpu"):
        torch.set_flush_denormal(True)
    if device == "auto":
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu or auto.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda[:N].")
    return torch.device(device)


def _register_encoder_configs() -> None:
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(ENCODER_CONFIG_DIR)
        _registered = True


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip reports through the root logger; our errors say it better."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(level)


def _looks_like_path(pretrained: str) -> bool:
    return "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def load_clip(clip_name: str, pretrained: str | None) -> tuple[Any, Preprocess]:
    """Build an open_clip model on CPU in eval mode, and its frame preprocessing."""
    import open_clip

    _register_encoder_configs()
    if clip_name not in open_clip.list_models():
        raise ConfigError(f"open_clip has no model {clip_name!r}.")
    if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
        raise EncoderError(f"weights file {pretrained} does not exist: pass an existing file to --pretrained.")
    with _quiet_root_logger():
        if pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model = open_clip.create_model(clip_name, pretrained=None)
        else:
            try:
                model = open_clip.create_model(clip_name, pretrained=pretrained)
            except RuntimeError as err:
                raise EncoderError(
                    f"could not load weights {pretrained!r} for {clip_name} ({str(err).splitlines()[0][:120]}). "
                    "Offline? Download the weights file on a connected machine and pass --pretrained /path/to/file."
                ) from err
    model.eval()
    return model, Preprocess.from_open_clip(open_clip.get_model_preprocess_cfg(model))


def pretrained_tags() -> dict[str, list[str]]:
    """open_clip's pretrained tags by architecture (what --pretrained accepts besides a local file)."""
    import open_clip

    out: dict[str, list[str]] = {}
    for name, tag in open_clip.list_pretrained():
        out.setdefault(name, []).append(tag)
    return out


def module_fingerprint(module: nn.Module) -> str:
    """A short content hash of a module's weights: equal weights give equal fingerprints."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class FrameEncoder:
    """uint8 frames (N, S, S, 3) -> frame features (N, D), float32 on CPU."""

    visual: nn.Module
    preprocess: Preprocess
    device: torch.device
    fingerprint: str  # "<open_clip name>:<weights hash>", with ":bf16" or ":int8" for features computed so
    precision: str = "fp32"  # or "bf16": a bfloat16 copy under autocast; or "int8" (features differ: caches record it)
    role: str | None = None  # the precision record this encoder's "auto" followed (real work checks it: `observe`)

    @classmethod
    def load(
        cls, clip_name: str, pretrained: str | None, device: str = "auto", precision: str = "fp32"
    ) -> "FrameEncoder":
        """precision "auto": the faster of fp32 and bf16 on this host for this tower (measured the first time,
        bf16 only within 1e-3 cosine of fp32; `precision.py`); "int8" only when asked for (it is lossy)."""
        from tcmgc_cli import precision as prec

        prec.check(precision, prec.EXTRACT_PRECISIONS)
        model, pp = load_clip(clip_name, pretrained)
        visual = model.visual
        assert isinstance(visual, nn.Module)
        dev = resolve_device(device)
        weights = module_fingerprint(visual)
        fp32 = cls(visual.to(dev).eval(), pp, dev, f"{clip_name}:{weights}")
        sample = torch.randint(0, 256, (MEASURE_FRAMES, pp.size, pp.size, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
        variants = {"fp32": fp32}

        def run(p: str) -> torch.Tensor:
            return variants.setdefault(p, fp32.with_precision(p))(sample)

        if precision == "int8":
            return fp32.with_precision("int8")
        role = f"image tower {clip_name}, bf16 weights, x{MEASURE_FRAMES}"
        chosen = prec.resolve(precision, role, dev, run)
        encoder = variants.get(chosen) or fp32.with_precision(chosen)
        return dataclasses.replace(encoder, role=role) if precision == "auto" else encoder

    def with_precision(self, precision: str) -> "FrameEncoder":
        """This encoder in `precision`. bf16 runs a bfloat16 copy of the tower under autocast (autocast alone would
        cast every weight again on every call: 3x slower than fp32 for ViT-B/32 at 8 frames on a CPU, where the
        copy is 2x faster); int8 a copy whose linear layers are quantized (dynamic int8, on a CPU: `quantize.py`). Only from an fp32
        encoder, which keeps the weights the fingerprint names."""
        if precision == self.precision:
            return self
        if self.precision != "fp32":
            raise ValueError("with_precision converts from an fp32 encoder only")
        if precision == "int8" and self.device.type != "cpu":
            raise ConfigError("--precision int8 runs on a CPU: on a GPU use bf16 (or --device cpu).")
        from tcmgc_cli.model.quantize import int8_tower

        convert = {"bf16": lambda m: copy.deepcopy(m).to(torch.bfloat16), "int8": int8_tower}.get(precision)
        visual = convert(self.visual) if convert else self.visual
        suffix = f":{precision}" if precision != "fp32" else ""
        return FrameEncoder(visual, self.preprocess, self.device, self.fingerprint + suffix, precision)

    @torch.inference_mode()
    def padding_feature(self) -> torch.Tensor:
        """(D,): what a padded slot holds (`encode_pixels` on a frame that is not real)."""
        from tcmgc_cli.precision import autocast

        size = self.preprocess.size
        blank = torch.zeros(1, size, size, 3, dtype=torch.uint8, device=self.device)
        with autocast(self.device, self.precision):
            out = encode_pixels(self.visual, self.preprocess, blank, torch.zeros(1, dtype=torch.bool))
        return out.float().cpu()[0]

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        from tcmgc_cli.precision import autocast

        with autocast(self.device, self.precision):
            out = encode_pixels(self.visual, self.preprocess, frames.to(self.device, non_blocking=True))  # (N, D)
        return out.float().cpu()


def encode_pixels(visual: Any, pp: Preprocess, frames: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
    """The image tower on uint8 frames (N, S, S, 3) -> (N, D). A slot that is not `real` (N,) bool gets an all-zero
    normalized frame: the reference's padding, so a padded slot holds the tower's output for it (the padding
    feature). Every path that encodes frames (extraction, training end to end, a fine-tuned tower in search) comes
    here."""
    x = normalize(frames, pp)  # (N, 3, S, S)
    if real is not None:
        x = x * real.to(device=x.device, dtype=x.dtype)[:, None, None, None]
    out: torch.Tensor = visual(x)
    return out


def encode_tokens(clip: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (Q, L) -> token features W (Q, L, D) for every position, and the sentence feature s (Q, D).

    ln_final and the text projection are applied to all positions (open_clip's pooled output gives only the end
    token); s is W at the end token (the largest token id). Texts shorter than CLIP's context use the first L
    positional embeddings and the matching corner of the causal mask, as the reference does. Other open_clip text
    towers (SigLIP, MobileCLIP, PE: `model.text`) give their tokens after ln_final, projected here, and their own
    pooled sentence feature.
    """
    tower = getattr(clip, "text", None)
    if tower is not None:
        return _tower_tokens(tower, tokens)
    length = tokens.shape[1]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tokens).to(cast) + clip.positional_embedding[:length].to(cast)  # (Q, L, W)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    proj = clip.text_projection
    words: torch.Tensor = proj(x) if isinstance(proj, nn.Linear) else x @ proj  # (Q, L, D)
    sentence = words[torch.arange(len(tokens), device=tokens.device), tokens.argmax(-1)]  # (Q, D)
    return words, sentence


def has_token_features(clip: Any) -> bool:
    """Whether a text tower gives per-token features (what TC-MGC's words are): CLIP-style and open_clip's own
    TextTransformer towers do; Hugging Face towers and towers with an appended class token do not."""
    tower = getattr(clip, "text", None)
    if tower is None:
        return hasattr(clip, "transformer") and hasattr(clip, "ln_final")
    return hasattr(tower, "output_tokens") and getattr(tower, "cls_emb", None) is None


def _tower_tokens(tower: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(tower, "output_tokens") or getattr(tower, "cls_emb", None) is not None:
        raise EncoderError(
            f"this model's text tower ({type(tower).__name__}) gives no per-token features, which TC-MGC's words "
            "need: train and search with a CLIP-style or SigLIP model, or use --scorer clip."
        )
    tower.output_tokens = True
    sentence, x = tower(tokens)  # (Q, D) projected, (Q, L, W) after ln_final
    proj = tower.text_projection
    words: torch.Tensor = x if proj is None else proj(x) if isinstance(proj, nn.Linear) else x @ proj  # (Q, L, D)
    return words, sentence


def text_blocks(clip: Any) -> tuple[Any, torch.Tensor]:
    """The text transformer's blocks and position table (what seeds the temporal encoder)."""
    tower = getattr(clip, "text", clip)
    return tower.transformer.resblocks, tower.positional_embedding


def context_length(clip: Any) -> int:
    return int(getattr(getattr(clip, "text", clip), "context_length", 77))


class Tokenizer:
    """CLIP BPE: texts -> (Q, L) token ids (start, up to L-2 words, end, zero padding); reports truncation."""

    def __init__(self, clip_name: str, length: int) -> None:
        import open_clip

        _register_encoder_configs()
        self._tok = open_clip.get_tokenizer(clip_name)
        self.length = length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        tokens: torch.Tensor = self._tok(texts, context_length=self.length)
        return tokens

    def decode_one(self, token: int) -> str:
        """One token as text (start/end tokens as <start>/<end>)."""
        if token == self._tok.sot_token_id:
            return "<start>"
        if token == self._tok.eot_token_id:
            return "<end>"
        return str(self._tok.decode([token])).strip()

    def truncated(self, text: str) -> bool:
        """True when `text` has more word tokens than fit (they are cut)."""
        return len(self._tok.encode(text)) > self.length - 2


@dataclass
class TextEncoder:
    """CLIP's text tower with its tokenizer (the whole context), for scoring a cache without a trained checkpoint."""

    clip: Any  # the open_clip model
    tokenizer: Tokenizer
    device: torch.device
    fingerprint: str  # of the image tower: must equal the fingerprint of the cache being searched

    @classmethod
    def load(cls, clip_name: str, pretrained: str | None, device: str = "auto") -> "TextEncoder":
        model, _ = load_clip(clip_name, pretrained)
        dev = resolve_device(device)
        fingerprint = f"{clip_name}:{module_fingerprint(model.visual)}"
        return cls(model.to(dev), Tokenizer(clip_name, context_length(model)), dev, fingerprint)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> token features (Q, L, D) and sentence features (Q, D)."""
        return encode_tokens(self.clip, self.tokenizer(texts).to(self.device))
