"""tcmgc: text-to-video retrieval with TC-MGC (Text-Conditioned Multi-Grained Contrast).

The package imports nothing heavy at the top level: `tcmgc --help` must answer without torch.
Public names are resolved lazily on first use.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FeatureCache": "tcmgc_cli.cache",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcmgc_cli' has no attribute {name!r}")
