"""Checkpoints: our own format (weights + resolved config + tool version), and import of reference TC-MGC weights."""

import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli import __version__
from tcmgc_cli.errors import CheckpointError
from tcmgc_cli.fileio import atomic_path
from tcmgc_cli.model.encoder import Tokenizer, resolve_device
from tcmgc_cli.model.factory import ModelSpec, create_model
from tcmgc_cli.model.tcmgc import TcmgcModel

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
    """Write atomically: a file named `path` is always complete. Its zip records carry CRC-32 checksums."""
    payload = {"format": FORMAT, "tcmgc_version": __version__, "spec": spec.to_dict(), "state_dict": model.state_dict()}
    payload.update(extra or {})
    save_verified(payload, path)


def save_verified(payload: Any, path: Path) -> None:
    """torch.save atomically (see fileio.atomic_path); `load_verified` checks it on the way back."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_verified(path: Path) -> Any:
    """torch.load (weights only: no code runs) after checking every record against the CRC-32 that torch.save
    stored in the zip container; torch itself does not check them, so flipped bytes would load as wrong weights.

    Raises CheckpointError naming the file and what is wrong with it.
    """
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (no zip archive inside; is it the right file?): "
            "pass a run folder or a .pt file written by `tcmgc train`."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path} is damaged ({err}); use another checkpoint (last.prev.pt is the one before)."
        ) from err
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged: its record {bad} fails its checksum (the file changed after it was written). "
            "Use another checkpoint (checkpoints/last.prev.pt is the one before)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about weights_only and pickles are not for our users
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # pages, not a copy
    except pickle.UnpicklingError as err:  # torch's text here suggests weights_only=False: never for us
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} holds pickled Python objects{what}, and tcmgc reads only tensors and plain values, so that no "
            "code in a file can run: save just the weights (torch.save(model.state_dict(), FILE)) and load those."
        ) from None
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {first_line(err)}") from err


def first_line(err: BaseException) -> str:
    """An exception's first line, whole (cut only past 300 characters, at a word)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:300].rsplit(" ", 1)[0] + " ..."


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a tcmgc checkpoint's payload; a clear error for a missing, damaged, foreign or non-finite file."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: train one with `tcmgc train` or pass --checkpoint.")
    payload = load_verified(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a tcmgc checkpoint. Weights saved by the reference TC-MGC code become a run with "
            f"`tcmgc import-reference {path} --keep-rate R --output RUN`."
        )
    state = payload.get("state_dict", {})
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or infinite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}): "
            "it comes from a diverged run; use an earlier checkpoint or train again with a lower --lr."
        )
    return payload


@dataclass
class Trained:
    """A model loaded from a checkpoint, with what it needs to read a cache."""

    model: TcmgcModel
    spec: ModelSpec
    tokenizer: Tokenizer
    device: torch.device
    encoder_fingerprint: str  # the cache encoder it was trained on
    visual_trained: bool  # True when the image tower was fine-tuned: frames must be re-encoded
    precision: str = "fp32"  # of the text tower and temporal encoder: "fp32" or "bf16" (scoring stays fp32)


def find_checkpoint(path: Path) -> Path:
    """A run folder -> its best checkpoint (else last); a file is returned as is."""
    if path.is_file():
        return path
    for name in ("best.pt", "last.pt"):
        candidate = path / "checkpoints" / name
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"no checkpoint in {path}: expected checkpoints/best.pt or last.pt (train with `tcmgc train`)."
    )


def load_trained(path: Path, device: str = "auto") -> Trained:
    """A run folder (its best checkpoint) or checkpoint file, as a model in eval mode on `device`."""
    file = find_checkpoint(path)
    payload = read_checkpoint(file)
    spec = ModelSpec.from_dict(payload["spec"])
    model = create_model(ModelSpec(spec.name, spec.clip, None, spec.config), weights_follow=True)
    load_into(model, payload["state_dict"], str(file))
    dev = resolve_device(device)
    model = model.eval().to(dev)
    info = payload.get("data", {})
    return Trained(model, spec, Tokenizer(spec.clip, spec.config.max_words), dev,
                   info.get("encoder_fingerprint", ""), bool(info.get("visual_trained", False)))  # fmt: skip


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
