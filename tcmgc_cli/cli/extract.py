"""`tcmgc extract`: fill the feature cache from a folder of videos or a dataset."""

import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import DeviceOpt, IndexOpt, JsonOpt, handle_errors, make_progress, print_json, stderr, stdout
from tcmgc_cli.errors import ConfigError, TcmgcError

if TYPE_CHECKING:
    from tcmgc_cli.extract import ExtractReport
    from tcmgc_cli.options import EngineConfig


class Dataset(StrEnum):
    msrvtt = "msrvtt"
    didemo = "didemo"
    vatex = "vatex"


class Backend(StrEnum):
    pyav = "pyav"
    decord = "decord"


DEFAULT_BACKEND = Backend(defaults.BACKEND)


class Padding(StrEnum):
    zero = "zero"
    repeat = "repeat"


def extract_command(
    videos: Annotated[
        Path | None, typer.Option(help="Folder of videos (searched recursively); ids are file names without extension.")
    ] = None,
    dataset: Annotated[
        Dataset | None,
        typer.Option(
            help="Read the videos of a dataset laid out as the reference code expects (docs/data-formats.md): "
            "msrvtt, didemo or vatex, each video one entry with the reference's input for that dataset."
        ),
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="The dataset's folder, with --dataset.")] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="CSV with a video_id column: extract only the ids it lists.")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Cache file. Default: <workspace>/cache/<model>.h5, where later commands look.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model config (see `tcmgc models`).")] = defaults.MODEL,
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="CLIP weights: an open_clip tag (openai) or a local file. Default: the model config's ('none' = random init)."
        ),
    ] = None,
    num_frames: Annotated[
        int | None,
        typer.Option(
            help="Frames the model takes per entry (T). Default: the model config's (12 for B/32, 8 for tiny)."
        ),
    ] = None,
    fps: Annotated[
        float,
        typer.Option(
            help="Track rate: frames decoded and encoded per second of video, each once (the reference's 1 fps). "
            "Search moments are this fine."
        ),
    ] = defaults.FPS,
    padding: Annotated[
        Padding,
        typer.Option(
            help="An entry with fewer frames than the model takes: zero (the reference: its frames, then slots of the "
            "image tower's output for an all-zero frame, masked in the temporal encoder) or repeat (its frames spread "
            "over every slot)."
        ),
    ] = Padding.zero,
    sampling: Annotated[str | None, typer.Option(hidden=True, help="Gone: frames are a track at --fps.")] = None,
    batch_size: Annotated[
        int, typer.Option(help="Videos per encoder batch (and per cache segment).")
    ] = defaults.BATCH_VIDEOS,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Decoder processes; 0 decodes in the extracting process, between the tower's blocks of frames. "
            "Default: 0 on a CPU (the tower's threads use every core; decoder processes beside them slow it more "
            f"than they save), one per core but one, at most {defaults.GPU_DECODERS}, on a GPU.",
            show_default=False,
        ),
    ] = defaults.DECODERS,
    store_frames: Annotated[
        bool,
        typer.Option(
            "--store-frames", help="Also keep the preprocessed uint8 frames (needed for end-to-end fine-tuning)."
        ),
    ] = False,
    backend: Annotated[
        Backend,
        typer.Option(
            help="Video decoder: pyav decodes only the packets the track's frames need (the same frames), "
            "decord every packet; each falls back to the other on a file it cannot read."
        ),  # fmt: skip
    ] = DEFAULT_BACKEND,
    device: DeviceOpt = defaults.DEVICE,
    precision: Annotated[
        str,
        typer.Option(
            help="auto (the faster of fp32 and bf16 on this machine for this model, measured the first time; bf16 "
            "only within 1e-3 cosine of fp32), fp32, bf16, or int8 (the image tower's linear layers quantized, on a "
            "CPU; lossy, so auto never takes it: README, Benchmarks). A cache keeps the precision it was started with."
        ),
    ] = defaults.PRECISION,
    threads: Annotated[
        int | None,
        typer.Option(
            help="At most this many CPU threads for the image tower, and at most as many decoder processes "
            "(to index in the background). Default: every core."
        ),
    ] = None,
    window_seconds: Annotated[
        float | None,
        typer.Option(
            "--window-seconds",
            "--clip-seconds",
            help="With --videos: the model scores windows of this many seconds of the track (search finds the best "
            "ones, then the moment inside). Default: --num-frames frames (12 s for ViT-B/32 at 1 fps), the model's "
            "input; a shorter video is one entry, zero-padded. 0 keeps one entry per video. Dataset runs always keep "
            "one entry per video, the reference's input.",
        ),
    ] = None,
    window_stride: Annotated[
        float | None,
        typer.Option(
            "--window-stride",
            "--clip-stride",
            help="Seconds between the starts of consecutive windows (at most --window-seconds). Default: half a window.",
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read every cached row first (checksums, finite values); re-extract damaged ones."
        ),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="With --videos: afterwards, remove from the cache the videos whose files are gone from the folder. "
            "Refused, removing nothing, when the folder is missing or holds none of the cache's videos from it.",
        ),
    ] = False,
    index_uri: IndexOpt = None,
    index_type: Annotated[
        str, typer.Option(help="With --index: the engine's index, for a new collection: flat, ivf_sq8 or hnsw.")
    ] = "flat",
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="With --index: the run whose coarse vectors the engine holds. Default: as `tcmgc search`."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Decode videos, encode their frames with CLIP and store them in the HDF5 cache.

    Resumable: a rerun skips videos already cached with the same content and encoder, and retries failures.
    Exit 0 when all (or some, with a warning) videos are in the cache, 1 when none succeeded, 2 for bad options.
    """
    with handle_errors():
        from tcmgc_cli.options import EngineConfig, ExtractOptions

        if (videos is None) == (dataset is None):
            raise ConfigError("pass either --videos DIR or --dataset NAME --data-root DIR.")
        if dataset is not None and data_root is None:
            raise ConfigError("--dataset needs --data-root DIR (the folder with the annotation files and videos/).")
        if prune and dataset is not None:
            raise ConfigError("--prune goes with --videos DIR (a folder whose removed files leave the cache).")
        if prune and videos is not None and not videos.is_dir():
            raise ConfigError(f"--prune: {videos} is missing; nothing was removed. Mount or restore it, then rerun.")
        if videos is not None and not videos.is_dir():
            raise ConfigError(f"--videos {videos} is not a folder.")
        if sampling not in (None, "fps"):
            raise ConfigError(
                "--sampling is gone: each video is a track of frames at --fps (raise --fps for more frames)."
            )
        options = ExtractOptions(
            model=model, cache=cache, pretrained=pretrained, num_frames=num_frames, fps=fps, padding=padding.value,
            window_seconds=window_seconds, window_stride=window_stride, batch_size=batch_size, workers=workers,
            store_frames=store_frames, backend=backend.value, device=device, precision=precision, verify=verify,
            threads=threads,
        )  # fmt: skip
        options.rule(num_frames or 1)  # the window settings, checked before anything loads
        engine = EngineConfig.of(index_uri, index_type)
        from tcmgc_cli.distributed import process_rank
        from tcmgc_cli.extract import extract_dataset, extract_folder

        with make_progress("videos", disable=json_out or process_rank() != 0) as progress:
            task = progress.add_task("extract", total=None, rate="")
            start = time.monotonic()

            def on_progress(done: int, total: int) -> None:
                rate = done / max(time.monotonic() - start, 1e-9)  # from the wall clock: cached videos come at once
                progress.update(task, completed=done, total=total, rate=f"{rate:.2f} videos/s")

            if dataset is not None:
                assert data_root is not None
                report = extract_dataset(dataset.value, data_root, annotations=annotations, options=options,
                                         on_progress=on_progress)  # fmt: skip
            else:
                assert videos is not None
                report = extract_folder(videos, ids=_listed(annotations), prune=prune, options=options,
                                        on_progress=on_progress)  # fmt: skip
        if process_rank() != 0:
            return  # under torchrun, rank 0 reports for every process
        _render(report, json_out)
        if engine.uri is not None and (report.extracted or report.cached or report.pruned):
            _sync(engine, Path(report.cache), checkpoint, device, json_out)
        if report.failed and not (report.extracted or report.cached):
            from tcmgc_cli.cache import failures_file

            where = '"failed" in the JSON above' if json_out else "the table above"
            raise TcmgcError(f"none of the {len(report.failed)} video(s) could be extracted ({where} and "
                             f"{failures_file(report.cache)} say why); fix them and rerun.")  # fmt: skip


def _sync(engine: "EngineConfig", cache: Path, checkpoint: Path | None, device: str, quiet: bool) -> None:
    """--index: bring the engine to the cache's new state (a prune's deletions included)."""
    from tcmgc_cli.search import open_search

    with make_progress("entries", disable=quiet) as progress:
        task = progress.add_task(f"sync {engine.uri}", total=None, rate="")
        index = open_search(checkpoint, cache, device, engine=engine, on_encoded=lambda n: progress.advance(task, n))
    if not quiet:
        stderr.print(f"{engine.uri}: in step with {cache} ({len(index):,} entries).", highlight=False, soft_wrap=True)


def _listed(annotations: Path | None) -> list[str] | None:
    """The ids a CSV lists (its video_id column), or None for every video."""
    from tcmgc_cli.data.annotations import read_id_list

    return None if annotations is None else read_id_list(annotations)


def _render(report: "ExtractReport", json_out: bool) -> None:
    from tcmgc_cli.cache import failures_file

    cache_path = report.cache
    if json_out:
        print_json(report.to_dict())
    else:
        from rich.table import Column, Table

        table = Table("extracted", "already cached", "failed", "ignored files", "frames encoded",
                      "s of video / s", "seconds", title=cache_path)  # fmt: skip
        table.add_row(*map(str, (len(report.extracted), len(report.cached), len(report.failed))),
                      str(len(report.ignored)), f"{report.frames:,}", f"{report.to_dict()['video_seconds_per_s']:.1f}",
                      f"{report.wall_s:.1f}")  # fmt: skip
        stdout.print(table)
        if report.pruned:
            stderr.print(
                f"Removed {len(report.pruned)} video(s) whose files are gone: {', '.join(report.pruned[:10])}."
            )
        for p in report.partial[:20]:
            stderr.print(f"Note: {p.video_id}: {p.reason}.", highlight=False, soft_wrap=True)
        if report.failed:
            fails = Table(Column("id", no_wrap=True), "reason", title="failed (a rerun retries these)")
            for f in report.failed[:20]:
                fails.add_row(f.video_id, f.reason)
            stdout.print(fails)
    if report.failed and (report.extracted or report.cached):
        where = '"failed" in the JSON output' if json_out else "the reasons above"
        stderr.print(
            f"[yellow]Warning:[/yellow] {len(report.failed)} video(s) failed; see {where} "
            f"(also in {failures_file(cache_path)}). A rerun retries them.",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
