"""`tcmgc serve`: a search page with keyframes and playable moments, and its HTTP API."""

from pathlib import Path
from typing import Annotated

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import DeviceOpt, IndexOpt, PrecisionOpt, ThreadsOpt, handle_errors, stderr


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = defaults.HOST,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = defaults.PORT,
    cache: Annotated[Path | None, typer.Option(help="Feature cache. Default: as `tcmgc search` finds it.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Run folder or checkpoint file. Default: the newest run.")
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="tcmgc, clip, or auto (tcmgc when the workspace holds a trained run), as for search.")
    ] = defaults.SCORER,
    pretrained: Annotated[
        str | None, typer.Option(help="With the clip scorer: the CLIP weights the cache was extracted with.")
    ] = None,
    device: DeviceOpt = defaults.DEVICE,
    precision: PrecisionOpt = defaults.PRECISION,
    threads: ThreadsOpt = None,
    index_uri: IndexOpt = None,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most waiting queries answered together in one pass, one search at a time (under load: higher "
            "throughput and lower latency); 1: each query alone, one search per core.",
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
        from tcmgc_cli.options import EngineConfig
        from tcmgc_cli.serve.server import serve

        serve(host, port, cache=cache, checkpoint=checkpoint, scorer=scorer, pretrained=pretrained, device=device,
              precision=precision, threads=threads, max_batch=max_batch, watch=watch, thumb_cache_mb=thumb_cache_mb,
              on_note=lambda note: stderr.print(note, highlight=False, soft_wrap=True),
              engine=EngineConfig.of(index_uri))  # fmt: skip
