"""`tcmgc extract`: fill the feature cache from a folder of videos or a dataset."""

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tcmgc_cli.cli._common import DeviceOpt, JsonOpt, handle_errors, make_progress, print_json, stderr, stdout
from tcmgc_cli.errors import ConfigError

if TYPE_CHECKING:
    from tcmgc_cli.extract import ExtractReport


class Dataset(StrEnum):
    msrvtt = "msrvtt"


class Backend(StrEnum):
    decord = "decord"
    pyav = "pyav"


class Sampling(StrEnum):
    uniform = "uniform"
    fps = "fps"


def extract_command(
    videos: Annotated[
        Path | None, typer.Option(help="Folder of videos (searched recursively); ids are file names without extension.")
    ] = None,
    dataset: Annotated[
        Dataset | None, typer.Option(help="Read the video list of a dataset laid out as the reference code expects.")
    ] = None,
    data_root: Annotated[Path | None, typer.Option(help="The dataset's folder, with --dataset.")] = None,
    annotations: Annotated[
        Path | None, typer.Option(help="CSV with a video_id column: extract only the ids it lists.")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Cache file. Default: <workspace>/cache/<model>.h5, where later commands look.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model config (see `tcmgc models`).")] = "tcmgc-b32",
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="CLIP weights: an open_clip tag (openai) or a local file. Default: the model config's ('none' = random init)."
        ),
    ] = None,
    num_frames: Annotated[
        int | None, typer.Option(help="Frames kept per video. Default: the model config's (12 for B/32).")
    ] = None,
    sampling: Annotated[
        Sampling, typer.Option(help="uniform: frames spread over the whole video; fps: decode at --fps, then spread.")
    ] = Sampling.uniform,
    fps: Annotated[float, typer.Option(help="Frames per second decoded with --sampling fps.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Videos per encoder batch (and per cache segment).")] = 16,
    workers: Annotated[int, typer.Option(help="Decoder processes; 0 decodes in the main process.")] = 2,
    store_frames: Annotated[
        bool,
        typer.Option(
            "--store-frames", help="Also keep the preprocessed uint8 frames (needed for end-to-end fine-tuning)."
        ),
    ] = False,
    backend: Annotated[Backend, typer.Option(help="Video decoder.")] = Backend.decord,
    device: DeviceOpt = "auto",
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16 autocast on CUDA (faster, slightly different features).")
    ] = "fp32",
    verify: Annotated[
        bool,
        typer.Option(
            "--verify", help="Read every cached row first (checksums, finite values); re-extract damaged ones."
        ),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Decode videos, encode their frames with CLIP and store them in the HDF5 cache.

    Resumable: a rerun skips videos already cached with the same content and encoder, and retries failures.
    Exit 0 when all (or some, with a warning) videos are in the cache, 1 when none succeeded, 2 for bad options.
    """
    with handle_errors():
        if batch_size < 1 or workers < 0:
            raise ConfigError("--batch-size must be at least 1 and --workers at least 0.")
        report, cache_path = _run(
            videos, dataset, data_root, annotations, cache, model, pretrained, num_frames, sampling.value, fps,
            batch_size, workers, store_frames, backend.value, device, precision, json_out, verify,
        )  # fmt: skip
        if int(os.environ.get("RANK", "0")) != 0:
            return  # under torchrun, rank 0 reports for every process
        _render(report, cache_path, json_out)
        if report.failed and not (report.extracted or report.cached):
            raise typer.Exit(1)


def _resolve_jobs(
    videos: Path | None, dataset: Dataset | None, data_root: Path | None, annotations: Path | None
) -> tuple[Path, list[str] | None]:
    from tcmgc_cli.data.annotations import msrvtt_videos, read_id_list

    if (videos is None) == (dataset is None):
        raise ConfigError("pass either --videos DIR or --dataset NAME --data-root DIR.")
    ids: list[str] | None = None
    if dataset is not None:
        if data_root is None:
            raise ConfigError("--dataset needs --data-root DIR (the folder with the annotation files and videos/).")
        folder, ids = msrvtt_videos(data_root)
    else:
        assert videos is not None
        if not videos.is_dir():
            raise ConfigError(f"--videos {videos} is not a folder.")
        folder = videos
    if annotations is not None:
        listed = read_id_list(annotations)
        ids = listed if ids is None else [i for i in listed if i in set(ids)]
    return folder, ids


def _run(
    videos: Path | None, dataset: Dataset | None, data_root: Path | None, annotations: Path | None,
    cache: Path | None, model: str, pretrained: str | None, num_frames: int | None, sampling: str, fps: float,
    batch_size: int, workers: int, store_frames: bool, backend: str, device: str, precision: str, quiet: bool,
    verify: bool = False,
) -> tuple["ExtractReport", Path]:  # fmt: skip
    from tcmgc_cli.cache import CacheSettings
    from tcmgc_cli.config import SamplingConfig
    from tcmgc_cli.data.video import VideoBackend
    from tcmgc_cli.extract import extract, plan_jobs
    from tcmgc_cli.model.encoder import FrameEncoder
    from tcmgc_cli.model.registry import get_model_config
    from tcmgc_cli.workspace import default_cache_path

    spec = get_model_config(model)
    folder, ids = _resolve_jobs(videos, dataset, data_root, annotations)
    jobs, pre_failed, ignored = plan_jobs(folder, ids)
    if not jobs and not pre_failed:
        raise ConfigError(f"no video files found in {folder}.")
    samp = SamplingConfig(spec["num_frames"] if num_frames is None else num_frames, sampling, fps)
    weights = spec["pretrained"] if pretrained is None else (None if pretrained.lower() == "none" else pretrained)
    encoder = FrameEncoder.load(spec["clip"], weights, device, precision)
    settings = CacheSettings(model, encoder.fingerprint, samp.to_dict(), encoder.preprocess.size, store_frames)
    cache_path = cache or default_cache_path(model)
    with make_progress("videos", disable=quiet or int(os.environ.get("RANK", "0")) != 0) as progress:
        task = progress.add_task("extract", total=len(jobs), rate="")

        def on_progress(done: int, total: int) -> None:
            speed = progress.tasks[task].speed
            progress.update(task, completed=done, rate=f"{speed:.1f} videos/s" if speed else "")

        report = extract(
            jobs, cache_path, encoder, settings, samp, backend=VideoBackend(backend),
            workers=workers, batch_size=batch_size, on_progress=on_progress, pre_failed=pre_failed, verify=verify,
        )  # fmt: skip
    report.ignored = ignored
    return report, cache_path


def _render(report: "ExtractReport", cache_path: Path, json_out: bool) -> None:
    if json_out:
        print_json({**report.to_dict(), "cache": str(cache_path)})
    else:
        from rich.table import Table

        table = Table("extracted", "already cached", "failed", "ignored files", "seconds", title=str(cache_path))
        table.add_row(*map(str, (len(report.extracted), len(report.cached), len(report.failed))),
                      str(len(report.ignored)), f"{report.wall_s:.1f}")  # fmt: skip
        stdout.print(table)
        if report.failed:
            fails = Table("id", "reason", title="failed (a rerun retries these)")
            for f in report.failed[:20]:
                fails.add_row(f.video_id, f.reason)
            stdout.print(fails)
    if report.failed:
        where = '"failed" in the JSON output' if json_out else "the reasons above"
        stderr.print(
            f"[yellow]Warning:[/yellow] {len(report.failed)} video(s) failed; see {where} "
            f"(also in {cache_path}.d/failures.json). A rerun retries them.",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
