"""`tcmgc index sync|status`: the search's coarse stage on a vector engine (Milvus), kept in step with the cache."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import (
    Command,
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    command_help,
    handle_errors,
    make_progress,
    print_json,
    stderr,
)

if TYPE_CHECKING:
    from tcmgc_cli.options import EngineConfig
    from tcmgc_cli.search import SearchIndex

app = typer.Typer(
    help="The search's coarse stage on a vector engine (Milvus): bring it to the cache's state, or say how far it is.",
    no_args_is_help=True,
)

IndexOpt = Annotated[
    str | None,
    typer.Option(
        help="The engine: a Milvus Lite file (a path ending in .db) or a Milvus server or cluster (http://HOST:PORT, "
        "https://... with $TCMGC_INDEX_TOKEN). Default: $TCMGC_INDEX."
    ),
]
IndexTypeOpt = Annotated[
    str,
    typer.Option(help="The engine's index, for a new collection: flat (exact), ivf_sq8 or hnsw (large collections)."),
]
CacheOpt = Annotated[Path | None, typer.Option(help="Feature cache. Default: as `tcmgc search` finds it.")]
CheckpointOpt = Annotated[Path | None, typer.Option(help="Run folder or checkpoint file. Default: the newest run.")]
ScorerOpt = Annotated[str, typer.Option(help="tcmgc, clip, or auto (tcmgc when the workspace holds a trained run).")]
PretrainedOpt = Annotated[str | None, typer.Option(help="With the clip scorer: the CLIP weights of the cache.")]


def _engine(index: str | None, index_type: str, batch: int = 256) -> "EngineConfig":
    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.options import EngineConfig

    engine = EngineConfig.of(index, index_type, batch)
    if engine.uri is None:
        raise ConfigError("pass --index URI (a Milvus Lite file.db or http://HOST:PORT), or set TCMGC_INDEX.")
    return engine


def sync_command(
    index: IndexOpt = None,
    cache: CacheOpt = None,
    checkpoint: CheckpointOpt = None,
    scorer: ScorerOpt = defaults.SCORER,
    pretrained: PretrainedOpt = None,
    index_type: IndexTypeOpt = "flat",
    batch_size: Annotated[
        int, typer.Option(min=1, help="Videos encoded and written at a time (a kill loses at most this batch).")
    ] = 256,
    device: DeviceOpt = defaults.DEVICE,
    precision: PrecisionOpt = defaults.PRECISION,
    json_out: JsonOpt = False,
) -> None:
    """Bring the engine to the cache's state: add the entries of tracks it lacks, drop those of removed or replaced
    videos. Idempotent and resumable: killed at any moment and run again, the engine ends with exactly the cache's
    entries."""
    with handle_errors(interrupted="what was written is kept; rerun the same command to finish."):
        engine = _engine(index, index_type, batch_size)
        from tcmgc_cli.search import open_search

        with make_progress("entries", disable=json_out) as progress:
            task = progress.add_task("sync", total=None, rate="")
            found = open_search(checkpoint, cache, device, scorer, pretrained, precision=precision, engine=engine,
                                on_encoded=lambda n: progress.advance(task, n))  # fmt: skip
        _report(engine, found, json_out)


def status_command(
    index: IndexOpt = None,
    cache: CacheOpt = None,
    checkpoint: CheckpointOpt = None,
    scorer: ScorerOpt = defaults.SCORER,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = defaults.DEVICE,
    json_out: JsonOpt = False,
) -> None:
    """How the engine stands against the cache: {"entries_cache", "entries_engine", "in_sync"}. Changes nothing."""
    with handle_errors():
        engine = _engine(index, "flat")
        from tcmgc_cli.search import open_search

        _report(engine, open_search(checkpoint, cache, device, scorer, pretrained, engine=engine, sync=False), json_out)


def _report(engine: "EngineConfig", found: "SearchIndex", json_out: bool) -> None:
    """{"entries_cache", "entries_engine", "in_sync"} as JSON, or one line."""
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.search.opening import engine_state

    assert found.cache_path is not None
    state = engine_state(found.store, FeatureCache(found.cache_path))
    if json_out:
        print_json(state)
    else:
        stderr.print(f"{engine.uri}: {state['entries_engine']:,} entries, the cache {state['entries_cache']:,}: "
                     f"{'in sync' if state['in_sync'] else 'NOT in sync (run `tcmgc index sync`)'}.")  # fmt: skip


app.command("sync", cls=Command, help=command_help(sync_command))(sync_command)
app.command("status", cls=Command, help=command_help(status_command))(status_command)
