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
