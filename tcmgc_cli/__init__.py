"""tcmgc: text-to-video retrieval with TC-MGC (Text-Conditioned Multi-Grained Contrast).

The main calls, one per command, importable from here (resolved on first use: `tcmgc --help` loads no torch):

    from tcmgc_cli import extract_folder, extract_dataset, train, evaluate, open_search, evaluate_moments, ablate
    from tcmgc_cli import DataSource, FeatureCache, add_tracks, TcmgcError
"""

import sys
import types
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

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tcmgc_cli' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`train`, `evaluate` and `ablate` name both a call and a module: loading such a module would make it this
    package's attribute and hide the call, whatever loaded it first. The package keeps the names for the calls;
    the modules stay importable by their dotted names (`from tcmgc_cli.train import TrainStep`)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
