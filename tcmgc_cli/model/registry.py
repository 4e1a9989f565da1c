"""Named model configs, kept as JSON files in the open_clip way. Torch-free, so listing models is instant."""

import json
from functools import cache
from pathlib import Path
from typing import Any

from tcmgc_cli.errors import ConfigError

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
ENCODER_CONFIG_DIR = Path(__file__).parent / "encoder_configs"


@cache
def _configs() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(MODEL_CONFIG_DIR.glob("*.json"))}


def list_models() -> list[str]:
    return list(_configs())


def get_model_config(name: str) -> dict[str, Any]:
    """A copy of the named config; raises ConfigError naming the known models."""
    configs = _configs()
    if name not in configs:
        raise ConfigError(f"unknown model {name!r}: use one of {', '.join(configs)} (see `tcmgc models`).")
    copy: dict[str, Any] = json.loads(json.dumps(configs[name]))
    return copy
