"""tcmgc: text-to-video retrieval with TC-MGC (Text-Conditioned Multi-Grained Contrast).

The main calls, one per command, importable from here (resolved on first use: `tcmgc --help` loads no torch):

    from tcmgc_cli import extract_folder, extract_dataset, train, evaluate, open_search, evaluate_moments, ablate
    from tcmgc_cli import DataSource, FeatureCache, add_tracks, ExtractOptions, TcmgcError

docs/architecture.md draws the packages floor by floor.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FeatureCache": "tcmgc_cli.cache",
    "add_tracks": "tcmgc_cli.cache",
    "DataSource": "tcmgc_cli.data.source",
    "ExtractOptions": "tcmgc_cli.extract",
    "extract_folder": "tcmgc_cli.extract",
    "extract_dataset": "tcmgc_cli.extract",
    "train": "tcmgc_cli.training",
    "evaluate": "tcmgc_cli.evaluation.retrieval",
    "open_search": "tcmgc_cli.search",
    "evaluate_moments": "tcmgc_cli.evaluation.moment_retrieval",
    "ablate": "tcmgc_cli.ablation",
    "TcmgcError": "tcmgc_cli.errors",
}
_MOVED = {  # modules of tcmgc 0.1 -> where that code lives now; scripts that import the old names keep working
    "tcmgc_cli.runs": "tcmgc_cli.training.runs",
    "tcmgc_cli.train": "tcmgc_cli.training.trainer",
    "tcmgc_cli.evaluate": "tcmgc_cli.evaluation.retrieval",
    "tcmgc_cli.scoring": "tcmgc_cli.evaluation.retrieval",
    "tcmgc_cli.moments": "tcmgc_cli.evaluation.moment_retrieval",
    "tcmgc_cli.ablate": "tcmgc_cli.ablation",
    "tcmgc_cli.opening": "tcmgc_cli.search.opening",
    "tcmgc_cli.ranking": "tcmgc_cli.search.rankers",
    "tcmgc_cli.reference": "tcmgc_cli.checkpoint.reference",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tcmgc_cli' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`train`, `evaluate` and `ablate` name both a call and a module of tcmgc 0.1: importing such a module would
    make it this package's attribute and hide the call. The package keeps the names for the calls."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import tcmgc_cli.runs` gives the module that now holds that code (the same module object, not a copy)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in _MOVED else None

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(_MOVED[spec.name])
        self._specs[spec.name] = module.__spec__  # the import system stamps the old name's spec on it: put it back
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        assert module.__spec__ is not None
        module.__spec__ = self._specs.pop(module.__spec__.name)


sys.modules[__name__].__class__ = _Package
if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
