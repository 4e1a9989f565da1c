"""A checkpoint saved by the reference TC-MGC code, turned into a run folder that evaluate, search and train --resume
accept (`tcmgc import-reference`).

The reference saves the unwrapped model's state dict (method doc, section 15). Its sizes follow the dataset it was
trained on (section 1): Nw words and Nf frames, a 77-row frame position table, and k = floor(Nw r) for its keep
rate r, which the [k, k] ISA matrices reveal. CLIP was fine-tuned end to end there, so the run marks its image tower
as trained: evaluating needs a cache extracted with --store-frames, whose frames the imported tower re-encodes.
"""

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli.checkpoint import import_reference, load_verified, save_checkpoint
from tcmgc_cli.config import apply_overrides
from tcmgc_cli.errors import CheckpointError, ConfigError
from tcmgc_cli.fileio import write_text_atomic
from tcmgc_cli.model.encoder import module_fingerprint
from tcmgc_cli.model.factory import create_model, resolve_spec
from tcmgc_cli.model.registry import get_model_config
from tcmgc_cli.runs import claim_run
from tcmgc_cli.train import TrainState, freeze, make_optimizer

SIZES = {"msrvtt": (32, 12), "vatex": (32, 12), "didemo": (64, 64)}  # (Nw, Nf), method doc section 1


def read_reference_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a reference checkpoint (tensors only; no code in the file runs)."""
    if not path.is_file():
        raise CheckpointError(f"no file at {path}: pass the reference checkpoint (e.g. pytorch_model.bin.4).")
    payload = load_verified(path)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors: is it a checkpoint of the reference code?")
    return state


def import_reference_run(
    checkpoint: Path, output: Path, keep_rate: float, dataset: str = "msrvtt", model: str = "tcmgc-b32",
    sets: list[str] | None = None,
) -> Path:  # fmt: skip
    """Write `output` as a run folder holding the reference weights: checkpoints/best.pt and last.pt (epoch 0,
    with a fresh optimizer, so `tcmgc train --resume --output OUTPUT` fine-tunes them) and config.json."""
    if dataset not in SIZES:
        raise ConfigError(f"unknown dataset {dataset!r}: use {', '.join(SIZES)} (it sets Nw and Nf, method doc 1).")
    words, frames = SIZES[dataset]
    base = {"max_words": words, "num_frames": frames, "temporal_positions": 77, "keep_rate": keep_rate}
    overrides, cfg = apply_overrides(base, get_model_config(model).get("train", {}), None, sets or [])
    spec = resolve_spec(model, "none", overrides)
    net = create_model(spec, weights_follow=True)
    import_reference(net, read_reference_state(checkpoint), str(checkpoint))
    with claim_run(output, resume=False):
        freeze(net, cfg)
        data = {"encoder_fingerprint": f"{spec.clip}:{module_fingerprint(net.clip.visual)}", "visual_trained": True}
        payload: dict[str, Any] = {"data": data, "train": dataclasses.asdict(cfg), "train_state": dataclasses.asdict(TrainState()),
                                   "imported_from": str(checkpoint.resolve())}  # fmt: skip
        folder = output / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        resume = {"optimizer": make_optimizer(net, cfg).state_dict(), "rng": torch.get_rng_state()}
        save_checkpoint(folder / "best.pt", net, spec, payload)
        save_checkpoint(folder / "last.pt", net, spec, {**payload, "resume": resume})
        config = {"spec": spec.to_dict(), "train": dataclasses.asdict(cfg), "dataset": dataset, "cache": None,
                  "imported_from": str(checkpoint.resolve())}  # fmt: skip
        write_text_atomic(output / "config.json", json.dumps(config, indent=1))
    return output
