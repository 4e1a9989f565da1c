"""A checkpoint saved by the reference TC-MGC code, turned into a run folder that evaluate, search and train --resume
accept (`tcmgc import-reference`).

The reference saves the unwrapped model's state dict (method doc, section 15). Its sizes follow the dataset it was
trained on (section 1): Nw words and Nf frames, a 77-row frame position table, and k = floor(Nw r) for its keep
rate r, which the [k, k] ISA matrices reveal. CLIP was fine-tuned end to end there, so the run marks its image tower
as trained: evaluating needs a cache extracted with --store-frames, whose frames the imported tower re-encodes.
"""

import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli.checkpoint.files import load_into, load_verified
from tcmgc_cli.checkpoint.run_folder import Provenance, RunFolder, TrainState
from tcmgc_cli.config import apply_overrides
from tcmgc_cli.defaults import DATASET_SIZES, MODEL
from tcmgc_cli.errors import CheckpointError, ConfigError
from tcmgc_cli.model.encoder import module_fingerprint
from tcmgc_cli.model.factory import create_model, resolve_spec
from tcmgc_cli.model.registry import get_model_config
from tcmgc_cli.optim import freeze, make_optimizer

# reference key prefix -> our key prefix (section 15 of the method doc)
_REFERENCE_PREFIXES = (
    ("clip.", "clip."),
    ("frame_position_embeddings.", "head.temporal.frame_position_embeddings."),
    ("transformerClip.resblocks.", "head.temporal.resblocks."),
    ("conditional_transformer.pool_frames.layer_norm", "head.lva.layer_norm"),
    ("conditional_transformer.pool_frames.linear_proj.", "head.lva.linear_proj."),
)
_REFERENCE_NAMES = {
    "global_mat_weight": "head.global_mat_weight",
    "local_mat_weight": "head.local_mat_weight",
    "attentive_word_logit_weight": "head.isa_vw.weight",
    "concat_frame_word_logit_weight": "head.isa_sf.weight",
    "attentive_word_mat_weight": "head.isa_fw_words.weight",
    "attentive_frame_word_mat_weight": "head.isa_fw_frames.weight",
    "attentive_frame_word_mat_weight2": "head.isa_fw_u.weight",
    "attentive_word_mat_weight2": "head.isa_fw_z.weight",
    "logit_weight": "head.aggregation.weight",
}
_REFERENCE_IGNORED = re.compile(
    r"^(cross\.|similarity_dense\.|lstm_visual\.|conditional_transformer\.pool_frames\.cross_attn\.)"
)


def map_reference_state(state: dict[str, torch.Tensor], max_words: int) -> dict[str, torch.Tensor]:
    """Rename a reference TC-MGC / X-CLIP state dict to ours; unknown keys are an error that lists them."""
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if _REFERENCE_IGNORED.match(key):
            continue
        if key in _REFERENCE_NAMES:
            out[_REFERENCE_NAMES[key]] = value
            continue
        for theirs, ours in _REFERENCE_PREFIXES:
            if key.startswith(theirs):
                out[ours + key[len(theirs) :]] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise CheckpointError(f"reference checkpoint has keys tcmgc cannot place: {', '.join(unmatched[:10])}.")
    return out


def implied_keep_rate(k: int, max_words: int) -> float:
    """A keep rate r with floor(max_words * r) == k, safe from rounding: the middle of [k, k + 1) / max_words."""
    return (k + 0.5) / max_words


def import_reference(model: Any, state: dict[str, torch.Tensor], source: str = "reference checkpoint") -> None:
    """Load reference weights into a TcmgcModel; k-sized matrices must agree with its keep rate and Nw."""
    cfg = model.cfg
    mapped = map_reference_state(state, cfg.max_words)
    want = model.head.isa_vw.weight.shape[0] if model.head.isa_vw is not None else None
    if want is not None and "head.isa_vw.weight" in mapped and (k := mapped["head.isa_vw.weight"].shape[0]) != want:
        r = implied_keep_rate(k, cfg.max_words)
        raise CheckpointError(
            f"{source} keeps k = {k} of Nw = {cfg.max_words} words (its [k, k] ISA matrices), this config keeps "
            f"k = {want} (keep rate {cfg.keep_rate}): pass keep rate {r!r} (--keep-rate, or --set model.keep_rate={r!r})."
        )
    if "head.aggregation.weight" not in mapped and getattr(model.head.aggregation, "weight", None) is not None:
        mapped["head.aggregation.weight"] = torch.eye(len(cfg.similarities))  # never created in the release (doc 12.1)
    if "head.temporal.frame_position_embeddings.weight" in mapped:
        table = mapped["head.temporal.frame_position_embeddings.weight"]
        ours = model.head.temporal.frame_position_embeddings.weight
        if table.shape != ours.shape:
            raise CheckpointError(
                f"{source} has a frame position table of {table.shape[0]} rows x {table.shape[1]}, this config "
                f"{ours.shape[0]} x {ours.shape[1]}: pass --set model.temporal_positions={table.shape[0]}"
                + (f" and a model of width {table.shape[1]}." if table.shape[1] != ours.shape[1] else ".")
            )
    load_into(model, mapped, source)


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
    checkpoint: Path, output: Path, keep_rate: float, dataset: str = "msrvtt", model: str = MODEL,
    sets: list[str] | None = None,
) -> Path:  # fmt: skip
    """Write `output` as a run folder holding the reference weights: its best and last checkpoints (epoch 0, with a
    fresh optimizer, so `tcmgc train --resume --output OUTPUT` fine-tunes them) and its config."""
    if dataset not in DATASET_SIZES:
        raise ConfigError(
            f"unknown dataset {dataset!r}: use {', '.join(DATASET_SIZES)} (it sets Nw and Nf, method doc 1)."
        )
    words, frames = DATASET_SIZES[dataset]
    base = {"max_words": words, "num_frames": frames, "temporal_positions": 77, "keep_rate": keep_rate}
    overrides, cfg = apply_overrides(base, get_model_config(model).get("train", {}), None, sets or [])
    spec = resolve_spec(model, "none", overrides)
    net = create_model(spec, weights_follow=True)
    import_reference(net, read_reference_state(checkpoint), str(checkpoint))
    run = RunFolder(output)
    with run.claim(resume=False):
        freeze(net, cfg)
        source = str(checkpoint.resolve())
        provenance = Provenance(f"{spec.clip}:{module_fingerprint(net.clip.visual)}", True, source)
        resume = {"optimizer": make_optimizer(net, cfg).state_dict(), "rng": torch.get_rng_state()}
        run.save(net, spec, cfg, TrainState(), provenance, resume, improved=True)
        run.write_config({"spec": spec.to_dict(), "train": asdict(cfg), "dataset": dataset, "cache": None,
                          "imported_from": source})  # fmt: skip
    return output
