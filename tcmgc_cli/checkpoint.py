"""Checkpoints: our own format (weights + resolved config + tool version), and import of reference TC-MGC weights."""

import os
import re
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli import __version__
from tcmgc_cli.errors import CheckpointError
from tcmgc_cli.model.factory import ModelSpec

FORMAT = "tcmgc-checkpoint-v1"

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


def save_checkpoint(path: Path, model: torch.nn.Module, spec: ModelSpec, extra: dict[str, Any] | None = None) -> None:
    """Write atomically: a file named `path` is always complete."""
    payload = {"format": FORMAT, "tcmgc_version": __version__, "spec": spec.to_dict(), "state_dict": model.state_dict()}
    payload.update(extra or {})
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    torch.save(payload, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a tcmgc checkpoint's payload (weights_only); a clear error for a missing, corrupt or foreign file."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with `tcmgc train` or pass --checkpoint.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(err).splitlines()[0][:120]}).") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tcmgc checkpoint; for reference TC-MGC weights use --reference.")
    return payload


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load weights strictly; a mismatch names the keys and says the checkpoint belongs to another config."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
            if keys
        )
        raise CheckpointError(
            f"{source} was saved for another model config ({detail}). Use the config it was trained with."
        )
    model.load_state_dict(state)


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
    if "head.isa_vw.weight" in out:
        k = out["head.isa_vw.weight"].shape[0]
        out["_implied_keep_rate"] = torch.tensor([k / max_words, (k + 1) / max_words])
    return out


def import_reference(model: Any, state: dict[str, torch.Tensor], source: str = "reference checkpoint") -> None:
    """Load reference weights into a TcmgcModel; k-sized matrices must agree with its keep rate and Nw."""
    cfg = model.cfg
    mapped = map_reference_state(state, cfg.max_words)
    implied = mapped.pop("_implied_keep_rate", None)
    want = model.head.isa_vw.weight.shape[0] if model.head.isa_vw is not None else None
    if implied is not None and want is not None and mapped["head.isa_vw.weight"].shape[0] != want:
        lo, hi = implied.tolist()
        raise CheckpointError(
            f"{source} was trained with keep rate r in [{lo:.3f}, {hi:.3f}) for Nw = {cfg.max_words} "
            f"(k = {round(lo * cfg.max_words)}), but this config keeps k = {want} (r = {cfg.keep_rate}): "
            f"pass --set model.keep_rate={lo:.3f}."
        )
    if "head.aggregation.weight" not in mapped and getattr(model.head.aggregation, "weight", None) is not None:
        mapped["head.aggregation.weight"] = torch.eye(len(cfg.similarities))  # never created in the release (doc 12.1)
    if "head.temporal.frame_position_embeddings.weight" in mapped:
        table = mapped["head.temporal.frame_position_embeddings.weight"]
        ours = model.head.temporal.frame_position_embeddings.weight
        if table.shape != ours.shape:
            raise CheckpointError(
                f"{source} has a frame position table {tuple(table.shape)}, config wants {tuple(ours.shape)}."
            )
    load_into(model, mapped, source)
