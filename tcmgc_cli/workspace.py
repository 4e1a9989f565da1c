"""Where commands keep their outputs by default, so that later commands find them without flags.

The workspace is `$TCMGC_WORKSPACE` if set, else `./tcmgc-workspace` in the current directory.
"""

import os
from pathlib import Path


def workspace_dir() -> Path:
    return Path(os.environ.get("TCMGC_WORKSPACE", "tcmgc-workspace"))


def default_cache_path(model: str) -> Path:
    """One cache per encoder model: `<workspace>/cache/<model>.h5`."""
    return workspace_dir() / "cache" / f"{model}.h5"


def runs_dir() -> Path:
    return workspace_dir() / "runs"


def new_run_dir(model: str) -> Path:
    """A fresh `<workspace>/runs/<timestamp>-<model>` folder name (not created)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = runs_dir() / f"{stamp}-{model}"
    n = 1
    while path.exists():
        path = runs_dir() / f"{stamp}-{model}-{n}"
        n += 1
    return path


def latest_run() -> Path | None:
    """The newest run folder that holds a checkpoint, or None."""
    root = runs_dir()
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "checkpoints").is_dir() and any((p / "checkpoints").glob("*.pt"))]
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name)) if runs else None
