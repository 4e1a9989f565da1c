"""The checkpoint file: weights, the resolved model spec and the tool's version in one torch.save zip, written
atomically and checked against its own CRC-32s when read. Only tensors and plain values load: no code in a file runs.
"""

import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli import __version__
from tcmgc_cli.errors import CheckpointError
from tcmgc_cli.fileio import atomic_path
from tcmgc_cli.model.factory import ModelSpec

FORMAT = "tcmgc-checkpoint-v1"


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
            f"{path} is damaged ({err}); use another checkpoint (a run keeps the one before the last)."
        ) from err
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged: its record {bad} fails its checksum (the file changed after it was written). "
            "Use another checkpoint (a run keeps the one before the last)."
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
