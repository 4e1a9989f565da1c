"""`tcmgc serve` assembled: the port checked first, the index opened once and followed (`live.py`), thumbnails kept
beside the cache, one search per core, and uvicorn serving the app (`app.py`)."""

import os
import socket
from collections.abc import Callable
from pathlib import Path

from tcmgc_cli.defaults import DEVICE, HOST, PORT, PRECISION, SCORER
from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.options import EngineConfig
from tcmgc_cli.precision import cap_threads


def check_port(host: str, port: int) -> None:
    """Say now, in one line, that the port is taken, instead of after the model has loaded."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise TcmgcError(f"cannot listen on {host}:{port} ({err.strerror}): pass another --port.") from None


def serve(
    host: str = HOST, port: int = PORT, *, cache: Path | None = None, checkpoint: Path | None = None,
    scorer: str = SCORER, pretrained: str | None = None, device: str = DEVICE, precision: str = PRECISION,
    threads: int | None = None, max_batch: int = 16, watch: float = 2.0, thumb_cache_mb: int = 256,
    on_note: Callable[[str], None] = print, engine: EngineConfig | None = None,
) -> None:  # fmt: skip
    """Serve the search page and its API until interrupted."""
    check_port(host, port)
    import torch
    import uvicorn

    from tcmgc_cli.search import open_search
    from tcmgc_cli.serve.app import create_app
    from tcmgc_cli.serve.live import LiveIndex
    from tcmgc_cli.serve.media import Thumbnails
    from tcmgc_cli.workspace import thumbnail_folders

    cap_threads(threads)
    index = open_search(checkpoint, cache, device, scorer, pretrained, precision=precision, engine=engine, sync=False)
    for note in index.notes:  # an engine that lags: answer from what it holds, sync at the first look
        on_note(f"Note: {note}")
    assert index.cache_path is not None
    live = LiveIndex(index, every_s=watch, on_error=lambda err: on_note(f"Note: not reloaded yet ({err})."))
    thumbs = Thumbnails(thumbnail_folders(index.cache_path), thumb_cache_mb << 20)
    on_note(f"Serving {len(index.collection.videos)} videos ({index.scorer} scorer) at http://{host}:{port}/")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = min(cores, threads or cores)  # --threads: at most that many searches at once, one thread each
    torch.set_num_threads(1)  # one search per core beats every core on one small search
    # batching: one search at a time takes every query waiting, and the other cores serve the requests (two searches
    # at once in one process contend for the interpreter lock: with the batcher alone, 8 clients, p99 222 ms against
    # 100 ms; through HTTP, benchmarks/serve_load.py: 96-135 ms against 277 ms)
    app = create_app(live, thumbs, parallel=1 if max_batch > 1 else cores, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="warning")
