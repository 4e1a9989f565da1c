"""`tcmgc extract`: decode videos in worker processes, encode frames in batches, write the cache.

reader (worker processes: hash, decode, sample, resize/crop on uint8) -> mapper (main process: frame encoder on
batches of videos) -> writer (one atomic cache segment per batch). Decoding of the next videos overlaps with
encoding of the current batch through a bounded window of in-flight jobs.
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

import numpy as np
import torch

from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache, VideoRecord
from tcmgc_cli.config import SamplingConfig
from tcmgc_cli.data.sampling import ClipPlan
from tcmgc_cli.data.transforms import Preprocess, resize_crop
from tcmgc_cli.data.video import VIDEO_EXTENSIONS, VideoBackend, read_clips
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
class Clip:
    """One indexed entry of a video: the whole video, or one window of a long one."""

    row_id: str  # the cache id: the video id, or "<video id>@<clip number>" for a window of a long video
    span: tuple[float, float]  # (start, end) seconds in the source video
    frames: np.ndarray  # (T, S, S, 3) uint8, resized and cropped
    timestamps: np.ndarray  # (T,) seconds
    frame_indices: np.ndarray  # (T,)
    num_frames: int  # distinct frames available


@dataclass
class Decoded:
    job: VideoJob
    clips: list[Clip]
    size: int
    mtime_ns: int
    sha1: str
    seconds: float  # time spent hashing and decoding
    failed_clips: list[tuple[str, tuple[float, float]]] = field(default_factory=list)  # (row id, span) not decoded


@dataclass
class Unchanged:
    job: VideoJob


@dataclass
class ExtractReport:
    extracted: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files in the folder that are not videos
    entries: int = 0  # cache rows written: one per extracted video, or one per clip of a long one
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
            "entries": self.entries,
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


def clip_id(video_id: str, number: int) -> str:
    return f"{video_id}@{number:04d}"


def decode_job(
    job: VideoJob, sampling: SamplingConfig, pp: Preprocess, backend: VideoBackend, known_sha1: str | None,
    window: float = 0.0, stride: float = 0.0,
) -> Decoded | Unchanged | Failure:  # fmt: skip
    """Hash, decode and preprocess one video: one clip, or overlapping `window`-second clips every `stride` seconds
    when it is longer than one window. Never raises for bad input: returns a Failure instead."""
    start = time.perf_counter()
    plan = ClipPlan(sampling, window, stride)
    try:
        stat = job.path.stat()
        sha1 = file_sha1(job.path)
        if known_sha1 == sha1:
            return Unchanged(job)
        video = read_clips(job.path, plan, backend, lambda frames: resize_crop(frames, pp))  # each (T, S, S, 3)
    except (TcmgcError, OSError) as err:
        return Failure(job.video_id, str(job.path), str(err))
    whole = len(plan.spans) == 1
    clips = [Clip(job.video_id if whole else clip_id(job.video_id, c.number), plan.spans[c.number], c.frames, c.times,
                  np.asarray(c.indices, dtype=np.int64), len(set(c.indices))) for c in video.clips]  # fmt: skip
    failed = [(clip_id(job.video_id, n), plan.spans[n]) for n in video.failed]
    return Decoded(job, clips, stat.st_size, stat.st_mtime_ns, sha1, time.perf_counter() - start, failed)


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

    sampling: SamplingConfig
    pp: Preprocess
    backend: VideoBackend
    window: float = 0.0
    stride: float = 0.0

    def __call__(self, job: VideoJob, known: str | None) -> Decoded | Unchanged | Failure:
        return decode_job(job, self.sampling, self.pp, self.backend, known, self.window, self.stride)


def _to_records(
    batch: list[Decoded], encoder: FrameEncoder, store_frames: bool, num_frames: int, block: int = 64
) -> list[VideoRecord]:
    """One record per clip of num_frames rows; the image tower sees `block` clips at a time (a long video has
    hundreds). A clip with fewer frames (zero padding) is filled with the tower's output for an all-zero
    normalized frame, its frame index -1 and the time of its last real frame (method doc, section 2)."""
    pairs = [(d, c) for d in batch for c in d.clips]
    pad = encoder.padding_feature().numpy()  # (D,)
    records = []
    for start in range(0, len(pairs), block):
        part = pairs[start : start + block]
        real = encoder(torch.from_numpy(np.concatenate([c.frames for _, c in part])))  # (sum of T_i, D)
        offsets = np.cumsum([0, *(len(c.frames) for _, c in part)])
        for i, (d, c) in enumerate(part):
            emb = np.concatenate(
                [real[offsets[i] : offsets[i + 1]].numpy(), np.tile(pad, (num_frames - len(c.frames), 1))]
            )
            short = num_frames - len(c.frames)  # padded slots
            frames = (
                np.concatenate([c.frames, np.zeros((short, *c.frames.shape[1:]), np.uint8)]) if store_frames else None
            )
            records.append(VideoRecord(
                c.row_id, emb, np.concatenate([c.timestamps, np.full(short, c.timestamps[-1], np.float32)]),
                np.concatenate([c.frame_indices, np.full(short, -1, np.int64)]), c.num_frames,
                str(d.job.path.resolve()), d.size, d.mtime_ns, d.sha1, frames, d.job.video_id, c.span,
            ))  # fmt: skip
    return records


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
        if stamp and stamp[:2] == (st.st_size, st.st_mtime_ns):
            cached.append(job.video_id)
        else:
            todo.append((job, stamp[2] if stamp else None))
    return todo, cached


def extract(
    jobs: list[VideoJob],
    cache_path: Path,
    encoder: FrameEncoder,
    settings: CacheSettings,
    sampling: SamplingConfig,
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
    writer = CacheWriter(cache_path, settings, shard=dist.rank if dist.world > 1 else None)
    report = ExtractReport(failed=list(pre_failed) if dist.rank == 0 else [])
    try:
        _extract_share(
            jobs[dist.rank :: dist.world],
            writer,
            encoder,
            settings,
            sampling,
            backend,
            workers,
            batch_size,
            report,
            on_progress,
            verify,
        )
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
    pretrained: str | None = None, num_frames: int | None = None, sampling: str = "uniform", fps: float = 1.0,
    padding: str = "repeat",
    batch_size: int = 16, workers: int = 2, store_frames: bool = False, backend: str = "decord", device: str = "auto",
    precision: str = "fp32", verify: bool = False, on_progress: Callable[[int, int], None] | None = None,
    clip_seconds: float = 0.0, clip_stride: float | None = None,
) -> ExtractReport:  # fmt: skip
    """Extract every video under `videos` (or only `ids`) with `model`'s image tower into `cache` (default: the
    workspace's cache for `model`, where later commands look). Resumable, like `tcmgc extract`. A video longer than
    `clip_seconds` (0: never) is indexed as overlapping clips every `clip_stride` seconds (default: half a clip).

        report = extract_folder(Path("my_videos"), "tcmgc-b32", pretrained="ViT-B-32.pt")
        report.extracted, report.failed, report.cache
    """
    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.model.registry import get_model_config
    from tcmgc_cli.workspace import default_cache_path

    if batch_size < 1 or workers < 0:
        raise ConfigError("--batch-size must be at least 1 and --workers at least 0.")
    entry = get_model_config(model)
    clip_settings(clip_seconds, clip_stride)  # bad values fail before the model loads
    jobs, pre_failed, ignored = plan_jobs(videos, ids)
    if not jobs and not pre_failed:
        raise ConfigError(f"no video files found in {videos}.")
    samp = SamplingConfig(entry["num_frames"] if num_frames is None else num_frames, sampling, fps, padding)
    weights = entry["pretrained"] if pretrained is None else (None if pretrained.lower() == "none" else pretrained)
    encoder = FrameEncoder.load(entry["clip"], weights, device, precision)
    clips = clip_settings(clip_seconds, clip_stride)
    settings = CacheSettings(model, encoder.fingerprint, samp.to_dict(), encoder.preprocess.size, store_frames, clips)
    path = cache or default_cache_path(model)
    report = extract(jobs, path, encoder, settings, samp, backend=VideoBackend(backend), workers=workers,
                     batch_size=batch_size, on_progress=on_progress, pre_failed=pre_failed, verify=verify)  # fmt: skip
    report.ignored, report.cache = ignored, str(path)
    return report


def clip_settings(seconds: float, stride: float | None) -> dict[str, float] | None:
    """The cache's clip settings: None for one entry per video; refuses windows that would leave gaps."""
    from tcmgc_cli.errors import ConfigError

    if seconds < 0 or (stride is not None and stride <= 0):
        raise ConfigError("--clip-seconds must be at least 0 and --clip-stride more than 0.")
    if seconds == 0:
        return None
    stride = seconds / 2 if stride is None else stride
    if stride > seconds:
        raise ConfigError(f"--clip-stride {stride:g} is longer than --clip-seconds {seconds:g}: parts of the videos "
                          "would fall between clips. Use a stride no longer than the clip.")  # fmt: skip
    return {"seconds": float(seconds), "stride": float(stride)}


def merge_reports(reports: list[ExtractReport]) -> ExtractReport:
    merged = ExtractReport(wall_s=max(r.wall_s for r in reports))
    for r in reports:
        merged.extracted += r.extracted
        merged.entries += r.entries
        merged.cached += r.cached
        merged.failed += r.failed
        merged.decode_s += r.decode_s
        merged.encode_s += r.encode_s
    return merged


def _extract_share(
    jobs: list[VideoJob], writer: CacheWriter, encoder: FrameEncoder, settings: CacheSettings, sampling: SamplingConfig,
    backend: VideoBackend, workers: int, batch_size: int, report: ExtractReport, on_progress: Callable[[int, int], None] | None,
    verify: bool = False,
) -> None:  # fmt: skip
    todo, report.cached = _skip_plan(jobs, writer.path, settings, verify)
    done = len(report.cached)
    clips = settings.clips or {}
    decode = _Decoder(sampling, encoder.preprocess, backend, clips.get("seconds", 0.0), clips.get("stride", 0.0))
    batch: list[Decoded] = []

    def flush() -> None:
        t0 = time.perf_counter()
        records = _to_records(batch, encoder, settings.store_frames, sampling.num_frames)
        report.encode_s += time.perf_counter() - t0
        writer.add(records)
        report.extracted.extend(dict.fromkeys(r.video or r.video_id for r in records))
        report.entries += len(records)
        batch.clear()

    for result in _decode_stream(todo, decode, workers, window=max(2 * workers, 2 * batch_size)):
        if isinstance(result, Decoded):
            report.decode_s += result.seconds
            report.failed += [Failure(row, str(result.job.path), f"the clip {a:.1f}-{b:.1f} s does not decode; the "
                                      "video's other clips are kept") for row, (a, b) in result.failed_clips]  # fmt: skip
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
