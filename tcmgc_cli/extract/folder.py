"""`tcmgc extract` as library calls: a folder of videos, or a dataset in the reference layout, into a cache.

report = extract_folder(Path("my_videos"), pretrained="ViT-B-32.pt")  # the default model, weights from a file
report.extracted, report.failed, report.cache
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tcmgc_cli.cache import CacheSettings, existing_settings, remove_videos
from tcmgc_cli.data.video import VideoBackend
from tcmgc_cli.errors import ConfigError
from tcmgc_cli.extract.pipeline import ExtractReport, extract
from tcmgc_cli.extract.scan import files_gone, plan_jobs
from tcmgc_cli.model.encoder import FrameEncoder
from tcmgc_cli.model.registry import dataset_inputs, get_model_config, resolve_weights
from tcmgc_cli.options import ExtractOptions
from tcmgc_cli.precision import cap_threads
from tcmgc_cli.workspace import default_cache_path

DATASETS = ("msrvtt", "didemo", "vatex")  # the layouts `--dataset` extracts


def extract_folder(
    videos: Path, model: str | None = None, *, ids: list[str] | None = None, prune: bool = False,
    on_progress: Callable[[int, int], None] | None = None, options: ExtractOptions | None = None,
    files: dict[str, str] | None = None, **settings: Any,
) -> ExtractReport:  # fmt: skip
    """Extract every video under `videos` (or only `ids`) into the cache (default: the workspace's cache for the
    model, where later commands look). Resumable, like `tcmgc extract`. `options` (or the same settings by keyword:
    `pretrained=...`, `window_seconds=...`) say how; `model` overrides its model.

    Each video is stored as its track: frames at `fps`, each encoded once. The model scores windows of
    `window_seconds` (default: the model's num_frames frames, 12 s for ViT-B/32 at 1 fps) every `window_stride`
    seconds (default: half a window); a shorter video is one entry, zero-padded. window_seconds 0: one entry per
    video, the reference's input (what dataset runs use). prune: then remove the cached videos whose files under
    `videos` are gone (see `files_gone`). precision auto: as the cache began, else the faster on this host.
    files: the exact file name of an id, where a dataset names it (DiDeMo).
    """
    opts = ExtractOptions.of(options, model=model, **settings)
    cap_threads(opts.threads)
    entry = get_model_config(opts.model)
    rule = opts.rule(entry["num_frames"])  # bad values fail first
    jobs, pre_failed, ignored = plan_jobs(videos, ids, files)
    if not jobs and not pre_failed:
        raise ConfigError(f"no video files found in {videos}.")
    path = opts.cache or default_cache_path(opts.model)
    gone = files_gone(path, videos) if prune else []  # decided before anything is written: a refusal keeps all
    began = existing_settings(path)
    precision = began.precision if opts.precision == "auto" and began is not None else opts.precision
    encoder = FrameEncoder.load(entry["clip"], resolve_weights(entry, opts.pretrained), opts.device, precision)
    settings_ = CacheSettings(
        opts.model, encoder.fingerprint, encoder.preprocess.size, rule.to_dict(), opts.store_frames
    )
    workers = opts.decoders(encoder.device.type == "cuda")
    report = extract(jobs, path, encoder, settings_, backend=VideoBackend(opts.backend), workers=workers,
                     batch_size=opts.batch_size, on_progress=on_progress, pre_failed=pre_failed, verify=opts.verify)  # fmt: skip
    report.ignored, report.cache = ignored, str(path)
    if gone:
        report.pruned = remove_videos(path, gone)
    return report


def extract_dataset(
    dataset: str, data_root: Path, model: str | None = None, *, annotations: Path | None = None,
    on_progress: Callable[[int, int], None] | None = None, options: ExtractOptions | None = None, **settings: Any,
) -> ExtractReport:  # fmt: skip
    """Extract the videos of a dataset laid out as the reference code reads it (`tcmgc extract --dataset msrvtt|
    didemo|vatex`), each scored whole with the reference's input for that dataset (method doc, section 2: DiDeMo
    takes more frames, `registry.dataset_inputs`); `annotations`: only the ids a CSV lists.

        report = extract_dataset("msrvtt", Path("MSRVTT"), pretrained="ViT-B-32.pt")
    """
    from tcmgc_cli.data.annotations import dataset_videos, read_id_list

    opts = ExtractOptions.of(options, model=model, **settings)
    if dataset not in DATASETS:
        raise ConfigError(f"unknown --dataset {dataset!r}: use {', '.join(DATASETS)} (or --videos DIR).")
    if opts.window_seconds:
        raise ConfigError(
            "dataset runs keep one entry per video, as the benchmarks define them: drop --window-seconds."
        )
    found = dataset_videos(dataset, data_root)
    ids = found.ids
    if annotations is not None:
        known = set(ids)
        ids = [i for i in read_id_list(annotations) if i in known]
    frames = opts.num_frames or dataset_inputs(get_model_config(opts.model), dataset)["num_frames"]
    whole = ExtractOptions.of(opts, window_seconds=0.0, num_frames=frames)
    return extract_folder(found.folder, ids=ids, files=found.files, on_progress=on_progress, options=whole)
