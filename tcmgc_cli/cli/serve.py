"""`tcmgc serve`: a search page with keyframes and playable moments, and its HTTP API."""

from pathlib import Path
from typing import Annotated

import typer

from tcmgc_cli.cli._common import DeviceOpt, PrecisionOpt, ThreadsOpt, cap_threads, handle_errors, stderr


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    cache: Annotated[Path | None, typer.Option(help="Feature cache. Default: as `tcmgc search` finds it.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Run folder or checkpoint file. Default: the newest run.")
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="tcmgc, clip, or auto (tcmgc when the workspace holds a trained run), as for search.")
    ] = "auto",
    pretrained: Annotated[
        str | None, typer.Option(help="With the clip scorer: the CLIP weights the cache was extracted with.")
    ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most waiting queries answered together in one pass (under load: higher throughput; 1: "
            "one at a time).",
        ),
    ] = 16,
    watch: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds between looks at the cache: a grown or changed cache (an extract that finished) is indexed "
            "and used, queries answered from the old index meanwhile. 0: only on POST /api/reload.",
        ),
    ] = 2.0,
    thumb_cache_mb: Annotated[
        int, typer.Option(min=1, help="Thumbnails kept on disk, in MB (the least recently used go first).")
    ] = 256,
) -> None:
    """Serve the search page at http://HOST:PORT/ and the API under /api (docs at /docs).

    The model and the index load once; each query then takes milliseconds, and queries that arrive together are
    answered together (one text-encoder batch, one scoring pass). The server follows its cache: videos extracted
    while it runs are found within seconds. Videos and thumbnails are served by video id only, never by a path from
    the request.
    """
    with handle_errors(interrupted="the server stopped."):
        import socket

        from tcmgc_cli.errors import TcmgcError

        with socket.socket() as probe:  # say it now, in one line, instead of after the model has loaded
            try:
                probe.bind((host, port))
            except OSError as err:
                raise TcmgcError(f"cannot listen on {host}:{port} ({err.strerror}): pass another --port.") from None
        import os

        import torch
        import uvicorn

        from tcmgc_cli.cache import segment_dir
        from tcmgc_cli.opening import open_search
        from tcmgc_cli.serve.app import create_app
        from tcmgc_cli.serve.live import LiveIndex
        from tcmgc_cli.serve.media import Thumbnails
        from tcmgc_cli.workspace import workspace_dir

        cap_threads(threads)
        index = open_search(checkpoint, cache, device, scorer, pretrained, precision=precision)
        assert index.cache_path is not None
        cache_path = index.cache_path
        live = LiveIndex(index, every_s=watch, on_error=lambda err: stderr.print(f"Note: not reloaded yet ({err})."))
        thumbs = Thumbnails([segment_dir(cache_path) / "thumbs", workspace_dir() / "thumbs"], thumb_cache_mb << 20)
        stderr.print(f"Serving {len(index.collection.videos)} videos ({index.scorer} scorer) at http://{host}:{port}/")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        cores = min(cores, threads or cores)  # --threads: at most that many searches at once, one thread each
        torch.set_num_threads(1)  # one search per core beats every core on one small search
        uvicorn.run(
            create_app(live, thumbs, parallel=cores, max_batch=max_batch), host=host, port=port, log_level="warning"
        )
