"""`tcmgc search`: find videos (and the moment in them) for a text query."""

from pathlib import Path
from typing import Annotated, Any

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import (
    DeviceOpt,
    IndexOpt,
    PrecisionOpt,
    ThreadsOpt,
    cap_threads,
    handle_errors,
    print_json,
    stderr,
    stdout,
)


def search_command(
    query: Annotated[str | None, typer.Argument(help='What to look for, e.g. "a dog runs".')] = None,
    queries: Annotated[
        Path | None, typer.Option(help="A text file with one query per line (scored in one batch).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Results per query.")] = defaults.TOP_K,
    candidates: Annotated[
        int, typer.Option(help="Videos the coarse stage passes to full TC-MGC scoring per query.")
    ] = defaults.CANDIDATES,
    cache: Annotated[
        Path | None, typer.Option(help="Feature cache. Default: the workspace's cache for the checkpoint's model.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Run folder or checkpoint file. Default: the newest run.")
    ] = None,
    scorer: Annotated[
        str,
        typer.Option(
            help="tcmgc: a trained checkpoint; clip: the cache's own CLIP embeddings, no training needed; auto: tcmgc "
            "when the workspace holds a trained run, else clip."
        ),
    ] = defaults.SCORER,
    per_video: Annotated[
        int, typer.Option(help="Results one video may take (its other good windows are listed as moments).")
    ] = defaults.PER_VIDEO,
    pretrained: Annotated[
        str | None,
        typer.Option(help="With the clip scorer: the CLIP weights the cache was extracted with. Default: the model's."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show which words attend to which frames (table and PNG).")
    ] = False,
    video: Annotated[
        str | None,
        typer.Option(
            help="Look only inside this video (its id, as results name it): its best moments for the query, what a "
            "person does with one long recording. With --explain: the video to explain (default: the top hit)."
        ),
    ] = None,
    moments: Annotated[
        int,
        typer.Option(
            help="Moments listed per result, best first, never overlapping; 0: none (each result's span is "
            "its best entry's), a little faster."
        ),
    ] = defaults.MOMENTS,
    explain_png: Annotated[
        Path | None, typer.Option(help="With --explain: where to write the PNG. Default: explain.png.")
    ] = None,
    device: DeviceOpt = defaults.DEVICE,
    precision: PrecisionOpt = defaults.PRECISION,
    threads: ThreadsOpt = None,
    index_uri: IndexOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="One JSON object per query and line: {query, results}.")
    ] = False,
) -> None:
    """Search the cached videos: with a trained checkpoint, a coarse pass over the whole collection, then full
    TC-MGC on the best candidates; without one, CLIP's own similarity.

    Each result is a video with its score, path and its best moments (start_sec, end_sec, score; at the track's
    resolution, one second by default), the first of which is start_sec/end_sec.
    """
    with handle_errors():
        from tcmgc_cli.cli.render import hits_table
        from tcmgc_cli.options import EngineConfig, check_search

        texts = _queries(query, queries)
        check_search(texts, top_k, candidates, per_video, moments)  # at once, before the model loads
        engine = EngineConfig.of(index_uri)
        from tcmgc_cli.search import open_search

        cap_threads(threads)
        index = open_search(
            checkpoint, cache, device, scorer, pretrained, precision=precision, engine=engine, sync=False
        )
        results, notes = index.search(texts, top_k, candidates, per_video, video, moments)
        for note in [*index.notes, *notes]:
            stderr.print(f"Note: {note.rstrip('.')}.", highlight=False, soft_wrap=True)
        if index.scorer == "clip" and not json_out:
            stderr.print("Scoring with CLIP's own similarity (no trained TC-MGC checkpoint is used).")
        for text, hits in zip(texts, results, strict=True):
            if json_out:
                print_json({"query": text, "scorer": index.scorer, "results": [h.to_dict() for h in hits]})
            else:
                stdout.print(hits_table(text, hits, index.scorer))
        if explain:
            target = video or (results[0][0].video_id if results[0] else None)
            if target is not None:
                _explain(index, texts[0], target, explain_png or Path("explain.png"), json_out)


def _queries(query: str | None, path: Path | None) -> list[str]:
    from tcmgc_cli.errors import ConfigError

    if (query is None) == (path is None):
        raise ConfigError('pass one query (tcmgc search "a dog runs") or --queries FILE.')
    if path is None:
        assert query is not None
        return [query]
    if not path.is_file():
        raise ConfigError(f"--queries {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--queries {path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8."
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"--queries {path} has no queries (one per line).")
    return lines


def _explain(index: Any, query: str, video_id: str, png: Path, quiet: bool) -> None:
    from tcmgc_cli.cli.render import attention_png, attention_table
    from tcmgc_cli.search.explain import word_attention

    words, weights, times = word_attention(index, query, video_id)
    if not quiet:
        stdout.print(attention_table(words, weights, times, title=f"“{query}” x {video_id}: word -> frame attention"))
    attention_png(words, weights, times, png, title=f"{query} / {video_id}")
    stderr.print(f"Wrote {png}")
