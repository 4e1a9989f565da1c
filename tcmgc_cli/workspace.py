"""Every place tcmgc keeps things, decided here: the workspace's folders, and the folder beside each cache.

The workspace is `$TCMGC_WORKSPACE` if set, else `./tcmgc-workspace` in the current directory. Commands keep their
outputs there by default, so that later commands find them without flags:

    <workspace>/cache/<model>.h5          one feature cache per encoder model (its folder `<model>.h5.d/` beside it)
    <workspace>/runs/<time>-<model>/      training runs (their layout: checkpoint/run_folder.py)
    <workspace>/ablations/<model>/        ablation grids
    <workspace>/search-index/, thumbs/    search indexes and thumbnails of caches whose own folder is read-only

A cache's folder `<cache>.d/` holds its segments (cache/), its search indexes (`index-<key>/`) and its thumbnails
(`thumbs/`).
"""

import hashlib
import os
import time
from pathlib import Path


def workspace_dir() -> Path:
    return Path(os.environ.get("TCMGC_WORKSPACE", "tcmgc-workspace"))


def default_cache_path(model: str) -> Path:
    """One cache per encoder model: `<workspace>/cache/<model>.h5`."""
    return workspace_dir() / "cache" / f"{model}.h5"


def workspace_caches() -> list[Path]:
    """The caches in the workspace, by name."""
    return sorted((workspace_dir() / "cache").glob("*.h5"))


def cache_folder(cache: Path) -> Path:
    """The folder beside a cache file: its segments, search indexes and thumbnails."""
    return cache.with_name(cache.name + ".d")


def runs_dir() -> Path:
    return workspace_dir() / "runs"


def new_run_dir(model: str) -> Path:
    """A fresh `<workspace>/runs/<timestamp>-<model>` folder name (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir() / f"{stamp}-{model}"
    n = 1
    while path.exists():
        path = runs_dir() / f"{stamp}-{model}-{n}"
        n += 1
    return path


def ablations_dir(model: str) -> Path:
    """Where `tcmgc ablate` keeps a model's grid by default."""
    return workspace_dir() / "ablations" / model


def index_folders(cache: Path, key: str) -> list[Path]:
    """Where the search index of `key` over a cache may live, in order: beside the cache, else (read-only) in the
    workspace."""
    name = f"index-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    where = hashlib.sha1(str(cache.resolve()).encode()).hexdigest()[:8]
    return [cache_folder(cache) / name, workspace_dir() / "search-index" / f"{where}-{name}"]


def saved_indexes(cache: Path) -> list[Path]:
    """The search indexes kept beside a cache."""
    return list(cache_folder(cache).glob("index-*"))


def thumbnail_folders(cache: Path) -> list[Path]:
    """Where thumbnails of a cache's videos are kept, in order: beside the cache, else in the workspace."""
    return [cache_folder(cache) / "thumbs", workspace_dir() / "thumbs"]
