"""Named model configs, kept as JSON files in the open_clip way, and open_clip's own architectures. Torch-free: the
presets and open_clip's config files are read as JSON, so listing models is instant."""

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from tcmgc_cli.defaults import DATASET_SIZES, MAX_WORDS, NUM_FRAMES, TEMPORAL_POSITIONS
from tcmgc_cli.errors import ConfigError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
ENCODER_CONFIG_DIR = Path(__file__).parent / "encoder_configs"


@cache
def _configs() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(MODEL_CONFIG_DIR.glob("*.json"))}


def list_models() -> list[str]:
    return list(_configs())


def get_model_config(name: str) -> dict[str, Any]:
    """A copy of the named preset, or an entry for an open_clip architecture (random weights unless --pretrained
    names a tag or file); raises ConfigError naming the choices."""
    configs = _configs()
    if name in configs:
        copy: dict[str, Any] = json.loads(json.dumps(configs[name]))
        return copy
    architectures = open_clip_architectures()
    if name in architectures:
        return _architecture_entry(name, json.loads(architectures[name].read_text()))
    raise ConfigError(
        f"unknown model {name!r}: use a preset ({', '.join(configs)}) or an open_clip architecture "
        "(`tcmgc models --all` lists them, e.g. ViT-B-16-SigLIP2, MobileCLIP2-S0)."
    )


@cache
def open_clip_architectures() -> dict[str, Path]:
    """open_clip's model configs by name (its JSON files, read without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(list(spec.submodule_search_locations)[0]) / "model_configs"
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def _architecture_entry(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A CLIP-style text tower reads the reference's 32 tokens; other towers (SigLIP, MobileCLIP, PE) their own
    context, which their pooling and masks assume."""
    context = int(cfg.get("text_cfg", {}).get("context_length", 77))
    words = context if cfg.get("custom_text") else min(MAX_WORDS, context)
    return {"description": f"open_clip {name}", "clip": name, "pretrained": None, "embed_dim": int(cfg["embed_dim"]),
            "num_frames": NUM_FRAMES, "max_words": words}  # fmt: skip


def resolve_weights(entry: dict[str, Any], pretrained: str | None) -> str | None:
    """The weights a `--pretrained` value means for a registry entry: None, its default; "none", random init (None);
    anything else, an open_clip tag or a local file."""
    if pretrained is None:
        default: str | None = entry.get("pretrained")
        return default
    return None if pretrained.lower() == "none" else pretrained


def text_context(clip_name: str) -> int:
    """The text tower's context length of an open_clip architecture (read from its config, without open_clip)."""
    ours = ENCODER_CONFIG_DIR / f"{clip_name}.json"
    path = ours if ours.is_file() else open_clip_architectures().get(clip_name)
    cfg = json.loads(path.read_text()) if path is not None else {}
    return int(cfg.get("text_cfg", {}).get("context_length", 77))


def dataset_inputs(entry: dict[str, Any], dataset: str) -> dict[str, int]:
    """The model's inputs for a dataset, {"max_words", "num_frames"}: its config's (MSR-VTT's and VATEX's, 32 words
    and 12 frames for the presets) except for DiDeMo, whose paragraphs and longer videos take the reference's 64
    words and 64 frames (method doc, section 1), at most what the text tower and the frame position table hold."""
    if dataset != "didemo":
        return {"max_words": int(entry["max_words"]), "num_frames": int(entry["num_frames"])}
    words, frames = DATASET_SIZES["didemo"]
    positions = int(entry.get("model", {}).get("temporal_positions", TEMPORAL_POSITIONS))
    return {"max_words": min(words, text_context(entry["clip"])), "num_frames": min(frames, positions)}
