"""tcmgc: text-to-video retrieval with TC-MGC (Text-Conditioned Multi-Grained Contrast).

The main calls, one per command, importable from here (resolved on first use: `tcmgc --help` loads no torch):

    from tcmgc_cli import extract_folder, extract_dataset, train, evaluate, open_search, evaluate_moments, ablate
    from tcmgc_cli import DataSource, FeatureCache, add_tracks, TcmgcError
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FeatureCache": "tcmgc_cli.cache",
    "add_tracks": "tcmgc_cli.cache",
    "DataSource": "tcmgc_cli.data.source",
    "extract_folder": "tcmgc_cli.extract",
    "extract_dataset": "tcmgc_cli.extract",
    "train": "tcmgc_cli.runs",
    "evaluate": "tcmgc_cli.evaluate",
    "open_search": "tcmgc_cli.opening",
    "evaluate_moments": "tcmgc_cli.moments",
    "ablate": "tcmgc_cli.ablate",
    "TcmgcError": "tcmgc_cli.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tcmgc_cli' has no attribute {name!r}")
