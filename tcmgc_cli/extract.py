"""`tcmgc extract`: decode videos in worker processes, encode frames in batches, write the cache.

reader (worker processes: hash, decode the track's frames at --fps, resize/crop on uint8) -> mapper (main process:
the image tower on blocks of frames, each frame once) -> writer (one atomic cache segment per batch of videos).
Decoding of the next videos overlaps with encoding of the current batch through a bounded window of in-flight jobs.
"""

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache, Track, video_entries
from tcmgc_cli.config import TrackConfig
from tcmgc_cli.data.sampling import fps_candidates
from tcmgc_cli.data.transforms import Preprocess, resize_crop
from tcmgc_cli.data.video import VIDEO_EXTENSIONS, VideoBackend, read_frames
from tcmgc_cli.distributed import Dist
from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.model.encoder import FrameEncoder


@dataclass(frozen=True)
class VideoJob:
    video_id: str  # the file name without its extension
    path: Path


@dataclass(frozen=True)
class Failure:
    video_id: str
    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.video_id, "path": self.path, "reason": self.reason}


@dataclass
class Decoded:
    """One video's track, decoded and preprocessed, before encoding."""

    job: VideoJob
    frames: np.ndarray  # (n, S, S, 3) uint8, resized and cropped
    times: np.ndarray  # (n,) start seconds
    indices: np.ndarray  # (n,) frame numbers
    duration: float  # seconds
    dropped: int  # frames of the track that did not decode (left out)
    size: int
    mtime_ns: int
    sha1: str
    seconds: float  # time spent hashing and decoding


@dataclass
class Unchanged:
    job: VideoJob


@dataclass
class ExtractReport:
    extracted: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in the folder that are not videos
    partial: list[Failure] = field(default_factory=list)  # extracted, but some frames of the track did not decode
    pruned: list[str] = field(default_factory=list)  # videos removed because their files are gone (--prune)
    entries: int = 0  # entries the extracted videos give the model: one per video, or one per window
    frames: int = 0  # track frames decoded and encoded (each once)
    video_seconds: float = 0.0  # seconds of video extracted
    decode_s: float = 0.0  # summed over workers
    encode_s: float = 0.0
    wall_s: float = 0.0
    cache: str = ""  # the cache file extracted into

    def to_dict(self) -> dict[str, object]:
        return {
            "cache": self.cache,
            "extracted": self.extracted,
            "cached": self.cached,
            "failed": [f.to_dict() for f in self.failed],
            "ignored": self.ignored,
            "partial": [f.to_dict() for f in self.partial],
            "pruned": self.pruned,
            "entries": self.entries,
            "frames": self.frames,
            "video_seconds": round(self.video_seconds, 3),
            "frames_per_video_second": round(self.frames / self.video_seconds, 4) if self.video_seconds else 0.0,
            "video_seconds_per_s": round(self.video_seconds / self.wall_s, 3) if self.wall_s else 0.0,
            "decode_s": round(self.decode_s, 3),
            "encode_s": round(self.encode_s, 3),
            "wall_s": round(self.wall_s, 3),
        }


def _escapes(folder: Path, name: str) -> bool:
    """True when `folder/name` would point outside `folder` (checked on the text of the path, not on links)."""
    target = os.path.normpath(os.path.join(os.path.abspath(folder), name))
    return os.path.commonpath([target, os.path.abspath(folder)]) != os.path.abspath(folder)


def scan_folder(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Video files of a folder (recursively) grouped by id, and the names of non-video files."""
    by_id: dict[str, list[Path]] = {}
    ignored: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            by_id.setdefault(path.stem, []).append(path)
        else:
            ignored.append(str(path.relative_to(folder)))
    return by_id, ignored


def plan_jobs(folder: Path, ids: Iterable[str] | None = None) -> tuple[list[VideoJob], list[Failure], list[str]]:
    """Jobs for every video in `folder` (or only the listed `ids`), failures for ids that cannot be served."""
    by_id, ignored = scan_folder(folder)
    jobs: list[VideoJob] = []
    failed: list[Failure] = []
    wanted = list(dict.fromkeys(ids)) if ids is not None else list(by_id)
    for vid in wanted:
        if _escapes(folder, vid):
            failed.append(Failure(vid, vid, f"id {vid!r} points outside {folder}; video ids must be plain file names"))
        elif vid not in by_id:
            failed.append(Failure(vid, str(folder / vid), f"no video file named {vid}.<ext> under {folder}"))
        else:
            first, *others = by_id[vid]
            jobs.append(VideoJob(vid, first))
            failed.extend(
                Failure(vid, str(p), f"duplicate id {vid!r}: {first.name} is used; rename this file") for p in others
            )
    return jobs, failed, ignored if ids is None else []


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def decode_job(
    job: VideoJob, fps: float, pp: Preprocess, backend: VideoBackend, known_sha1: str | None
) -> Decoded | Unchanged | Failure:
    """Hash, decode and preprocess one video's track: its frames at `fps` (the first frame of every 1/fps-second
    slot), each decoded once. Never raises for bad input: returns a Failure instead."""
    start = time.perf_counter()
    try:
        stat = job.path.stat()
        sha1 = file_sha1(job.path)
        if known_sha1 == sha1:
            return Unchanged(job)
        got = read_frames(job.path, lambda r: fps_candidates(r.num_frames, r.fps, fps), backend,
                          lambda frames: resize_crop(frames, pp))  # fmt: skip
    except (TcmgcError, OSError) as err:
        return Failure(job.video_id, str(job.path), str(err))
    return Decoded(job, got.frames, got.times.astype(np.float64), np.asarray(got.indices, dtype=np.int64),
                   got.duration, got.dropped, stat.st_size, stat.st_mtime_ns, sha1, time.perf_counter() - start)  # fmt: skip


def _init_worker(parent: int) -> None:
    """One thread per decoder process; decoder libraries' C-level log lines are dropped (failures are reported).

    A worker exits by itself when the extracting process is gone, even after `kill -9` (which runs none of our
    clean-up): a watchdog thread polls the parent pid (decoders release the GIL while they decode).
    """
    torch.set_num_threads(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="tcmgc-orphan-watch").start()


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


DecodeFn = Callable[[VideoJob, str | None], Decoded | Unchanged | Failure]


def _decode_stream(
    jobs: list[tuple[VideoJob, str | None]], decode: DecodeFn, workers: int, window: int
) -> Iterator[Decoded | Unchanged | Failure]:
    """Results in job order; with workers > 0, up to `window` jobs decode ahead in other processes."""
    if workers == 0:
        for job, known in jobs:
            yield decode(job, known)
        return
    ctx = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        pending: deque[tuple[VideoJob, cf.Future[Decoded | Unchanged | Failure]]] = deque()
        todo = iter(jobs)
        while True:
            while len(pending) < window and (item := next(todo, None)) is not None:
                pending.append((item[0], pool.submit(decode, *item)))
            if not pending:
                return
            job, fut = pending.popleft()
            try:
                yield fut.result()
            except cf.process.BrokenProcessPool:
                raise TcmgcError(
                    f"a decoder process crashed near {job.path.name}; rerun to continue (finished videos are kept), "
                    "or move that file away"
                ) from None


@dataclass
class _Decoder:
    """Picklable decode function for the worker pool."""

    fps: float
    pp: Preprocess
    backend: VideoBackend

    def __call__(self, job: VideoJob, known: str | None) -> Decoded | Unchanged | Failure:
        return decode_job(job, self.fps, self.pp, self.backend, known)


def _to_tracks(batch: list[Decoded], encoder: FrameEncoder, store_frames: bool) -> list[Track]:
    """The batch's tracks: every frame through the image tower once, a block of frames at a time (a long video has
    hundreds). On a CPU small blocks stay in cache: 32 frames run 1.2-1.5x faster than 128 for ViT-B/32 in bf16
    and MobileCLIP2-S0 on this project's CPU; a GPU wants large ones."""
    block = 256 if encoder.device.type == "cuda" else 32
    frames = np.concatenate([d.frames for d in batch])  # (sum n_i, S, S, 3)
    feats = torch.cat([encoder(torch.from_numpy(frames[i : i + block])) for i in range(0, len(frames), block)])
    offsets = np.cumsum([0, *(len(d.frames) for d in batch)])
    return [
        Track(d.job.video_id, d.times, feats[offsets[i] : offsets[i + 1]].numpy(), d.indices, d.duration,
              str(d.job.path.resolve()), d.size, d.mtime_ns, d.sha1, d.frames if store_frames else None)
        for i, d in enumerate(batch)
    ]  # fmt: skip


def _skip_plan(
    jobs: list[VideoJob], cache_path: Path, settings: CacheSettings, verify: bool = False
) -> tuple[list[tuple[VideoJob, str | None]], list[str]]:
    """Split jobs into (to decode, with the cached sha1 if any) and ids already cached with equal size and mtime.

    verify: read every cached row of these jobs first; damaged or non-finite ones are decoded again.
    """
    if not cache_path.exists():
        return [(j, None) for j in jobs], []
    cache = FeatureCache(cache_path)
    try:
        stamps = cache.source_stamps() if cache.settings.mismatch(settings) is None else {}
        paths = {v: cache.video_path(v) for v in stamps}
        if verify and stamps:
            for vid in cache.verify([j.video_id for j in jobs if j.video_id in stamps]):
                del stamps[vid]
    finally:
        cache.close()
    todo: list[tuple[VideoJob, str | None]] = []
    cached: list[str] = []
    for job in jobs:
        stamp = stamps.get(job.video_id)
        st = job.path.stat()
        if stamp and stamp[:2] == (st.st_size, st.st_mtime_ns) and paths[job.video_id] == str(job.path.resolve()):
            cached.append(job.video_id)
        else:  # changed, or moved (extracted again, so that the cache knows where it is now)
            todo.append((job, stamp[2] if stamp and paths[job.video_id] == str(job.path.resolve()) else None))
    return todo, cached


def extract(
    jobs: list[VideoJob],
    cache_path: Path,
    encoder: FrameEncoder,
    settings: CacheSettings,
    *,
    backend: VideoBackend = VideoBackend.decord,
    workers: int = 2,
    batch_size: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
    pre_failed: Iterable[Failure] = (),
    verify: bool = False,
) -> ExtractReport:
    """Extract every job into the cache at `cache_path`; resumable, and safe to kill at any moment.

    Under torchrun each process takes every world-th job (a deterministic, disjoint share), writes its own
    segments, and rank 0 merges them once all are done; rank 0's report covers every process.
    """
    start = time.perf_counter()
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    dist = Dist.from_env(encoder.device)
    writer = CacheWriter(cache_path, settings, dist.rank if dist.world > 1 else None, encoder.padding_feature().numpy())
    report = ExtractReport(failed=list(pre_failed) if dist.rank == 0 else [])
    try:
        share = jobs[dist.rank :: dist.world]
        _extract_share(share, writer, encoder, backend, workers, batch_size, report, on_progress, verify)
        dist.barrier()
        if dist.rank == 0:
            writer.compact()
        writer.write_failures({f.video_id: {"path": f.path, "reason": f.reason} for f in report.failed})
    finally:
        writer.close()
    report.wall_s = time.perf_counter() - start
    return merge_reports(dist.gather_objects(report)) if dist.world > 1 else report


def extract_folder(
    videos: Path, model: str = "tcmgc-b32", *, ids: list[str] | None = None, cache: Path | None = None,
    pretrained: str | None = None, num_frames: int | None = None, fps: float = 1.0, padding: str = "zero",
    clip_seconds: float | None = None, clip_stride: float | None = None, batch_size: int = 16, workers: int = 2,
    store_frames: bool = False, backend: str = "decord", device: str = "auto", precision: str = "auto",
    verify: bool = False, on_progress: Callable[[int, int], None] | None = None, prune: bool = False,
    threads: int | None = None,
) -> ExtractReport:  # fmt: skip
    """Extract every video under `videos` (or only `ids`) with `model`'s image tower into `cache` (default: the
    workspace's cache for `model`, where later commands look). Resumable, like `tcmgc extract`.

    Each video is stored as its track: frames at `fps`, each encoded once. The model scores windows of
    `clip_seconds` (default: the model's num_frames frames, 12 s for ViT-B/32 at 1 fps) every `clip_stride` seconds
    (default: half a window); a shorter video is one entry, zero-padded. clip_seconds 0: one entry per video, the
    reference's input (what dataset runs use). prune: then remove the cached videos whose files under `videos` are
    gone (see `files_gone`). precision: fp32, bf16, or auto (the faster on this host, measured once; a cache keeps
    the precision it was started with). threads: at most this many CPU threads for the image tower and as many
    decoder processes (default: every core, and `workers`).

        report = extract_folder(Path("my_videos"), "tcmgc-b32", pretrained="ViT-B-32.pt")
        report.extracted, report.failed, report.cache
    """
    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.model.registry import get_model_config, resolve_weights
    from tcmgc_cli.workspace import default_cache_path

    if batch_size < 1 or workers < 0:
        raise ConfigError("--batch-size must be at least 1 and --workers at least 0.")
    if threads is not None:
        workers = min(workers, cap_threads(threads))
    entry = get_model_config(model)
    frames = entry["num_frames"] if num_frames is None else num_frames
    rule = TrackConfig.from_seconds(fps, frames, clip_seconds, clip_stride, padding)  # bad values fail first
    jobs, pre_failed, ignored = plan_jobs(videos, ids)
    if not jobs and not pre_failed:
        raise ConfigError(f"no video files found in {videos}.")
    path = cache or default_cache_path(model)
    gone = files_gone(path, videos) if prune else []  # decided before anything is written: a refusal keeps all
    weights = resolve_weights(entry, pretrained)
    chosen = (cache_precision(path) or precision) if precision == "auto" else precision  # auto: as the cache began
    encoder = FrameEncoder.load(entry["clip"], weights, device, chosen)
    settings = CacheSettings(model, encoder.fingerprint, encoder.preprocess.size, rule.to_dict(), store_frames)
    report = extract(jobs, path, encoder, settings, backend=VideoBackend(backend), workers=workers,
                     batch_size=batch_size, on_progress=on_progress, pre_failed=pre_failed, verify=verify)  # fmt: skip
    report.ignored, report.cache = ignored, str(path)
    if gone:
        report.pruned = remove_videos(path, gone)
    return report


def cap_threads(threads: int) -> int:
    """At most `threads` CPU threads for torch's work (people index in the background on laptops)."""
    from tcmgc_cli.errors import ConfigError

    if threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {threads}); leave it out to use every core.")
    torch.set_num_threads(threads)
    return threads


def cache_precision(path: Path) -> str | None:
    """The precision an existing cache's features were computed in (a cache never mixes them)."""
    if not path.exists():
        return None
    cache = FeatureCache(path)
    try:
        return "bf16" if cache.settings.encoder_fingerprint.endswith(":bf16") else "fp32"
    finally:
        cache.close()


def extract_dataset(
    dataset: str, data_root: Path, model: str = "tcmgc-b32", *, annotations: Path | None = None, **options: Any
) -> ExtractReport:
    """Extract the videos of a dataset laid out as the reference code reads it (`tcmgc extract --dataset`), each
    scored whole with the reference's input (method doc, section 2); `annotations`: only the ids a CSV lists.
    `options` are `extract_folder`'s.

        report = extract_dataset("msrvtt", Path("MSRVTT"), "tcmgc-b32", pretrained="ViT-B-32.pt")
    """
    from tcmgc_cli.data.annotations import msrvtt_videos, read_id_list
    from tcmgc_cli.errors import ConfigError

    if dataset != "msrvtt":
        raise ConfigError(f"extracting --dataset {dataset} is not supported yet: use --videos DIR with its folder.")
    if options.get("clip_seconds"):
        raise ConfigError("dataset runs keep one entry per video, as the benchmarks define them: drop --clip-seconds.")
    folder, ids = msrvtt_videos(data_root)
    if annotations is not None:
        known = set(ids)
        ids = [i for i in read_id_list(annotations) if i in known]
    return extract_folder(folder, model, ids=ids, **{**options, "clip_seconds": 0.0})


def files_gone(cache_path: Path, folder: Path) -> list[str]:
    """The cached videos extracted from under `folder` whose files are no longer there (by id). Refuses when the
    folder is missing or holds none of the cache's videos from it (an unmounted drive must never empty a library)."""
    from tcmgc_cli.errors import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"--prune: {folder} is missing; nothing was removed. Mount or restore it, then rerun.")
    if not cache_path.exists():
        return []
    cache = FeatureCache(cache_path)
    try:
        root = folder.resolve()
        mine = [v for v in cache.videos() if Path(cache.video_path(v)).is_relative_to(root)]
    finally:
        cache.close()
    found = scan_folder(folder)[0]
    gone = [v for v in mine if v not in found]
    if mine and len(gone) == len(mine):
        raise ConfigError(f"--prune: {folder} holds none of the {len(mine)} videos the cache has from it; nothing was "
                          "removed. Is the drive mounted? Run without --prune, or check the folder.")  # fmt: skip
    return gone


def remove_videos(cache_path: Path, videos: list[str]) -> list[str]:
    """Delete videos from a cache (one atomic segment that removes them); returns those that were there."""
    cache = FeatureCache(cache_path)
    try:
        known = set(cache.videos())
        settings, there = cache.settings, [v for v in videos if v in known]
    finally:
        cache.close()
    if there:
        writer = CacheWriter(cache_path, settings)
        try:
            writer.add([], removed=there)
            writer.compact()
        finally:
            writer.close()
    return there


def merge_reports(reports: list[ExtractReport]) -> ExtractReport:
    merged = ExtractReport(wall_s=max(r.wall_s for r in reports))
    for r in reports:
        merged.extracted += r.extracted
        merged.entries += r.entries
        merged.frames += r.frames
        merged.video_seconds += r.video_seconds
        merged.cached += r.cached
        merged.failed += r.failed
        merged.partial += r.partial
        merged.decode_s += r.decode_s
        merged.encode_s += r.encode_s
    return merged


def _extract_share(
    jobs: list[VideoJob], writer: CacheWriter, encoder: FrameEncoder, backend: VideoBackend, workers: int,
    batch_size: int, report: ExtractReport, on_progress: Callable[[int, int], None] | None, verify: bool = False,
) -> None:  # fmt: skip
    settings = writer.settings
    todo, report.cached = _skip_plan(jobs, writer.path, settings, verify)
    done = len(report.cached)
    rule = settings.tracks
    decode = _Decoder(rule.fps, encoder.preprocess, backend)
    batch: list[Decoded] = []

    def flush() -> None:
        t0 = time.perf_counter()
        tracks = _to_tracks(batch, encoder, settings.store_frames)
        report.encode_s += time.perf_counter() - t0
        writer.add(tracks)
        report.extracted.extend(t.video_id for t in tracks)
        report.entries += sum(len(video_entries(t.video_id, len(t.times), rule)) for t in tracks)
        report.frames += sum(len(t.times) for t in tracks)
        report.video_seconds += sum(t.duration for t in tracks)
        batch.clear()

    for result in _decode_stream(todo, decode, workers, window=max(2 * workers, 2 * batch_size)):
        if isinstance(result, Decoded):
            report.decode_s += result.seconds
            if result.dropped:
                report.partial.append(Failure(result.job.video_id, str(result.job.path), f"{result.dropped} of "
                                              f"{result.dropped + len(result.times)} frames do not decode; the others are kept"))  # fmt: skip
            batch.append(result)
            if len(batch) == batch_size:
                flush()
        elif isinstance(result, Unchanged):
            report.cached.append(result.job.video_id)
        else:
            report.failed.append(result)
        done += 1
        if on_progress:
            on_progress(done, len(jobs))
    if batch:
        flush()
