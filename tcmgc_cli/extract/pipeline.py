"""The extraction loop: decoded stretches of tracks (`decode.py`) -> the image tower on blocks of frames, each frame
once -> one atomic cache segment per batch of videos. With decoder processes (on a GPU, by default), decoding runs
ahead of the encoder; without them (on a CPU), it runs between the tower's blocks. Under torchrun each process takes
every world-th video and writes its own segments; rank 0 merges them.
"""

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tcmgc_cli.cache import CacheSettings, CacheWriter, FeatureCache, Track, video_entries
from tcmgc_cli.data.video import VideoBackend
from tcmgc_cli.defaults import BACKEND
from tcmgc_cli.distributed import Dist
from tcmgc_cli.extract import decode as decoding
from tcmgc_cli.extract.decode import Decoded, Decoder, Unchanged, decode_stream
from tcmgc_cli.extract.scan import Failure, VideoJob
from tcmgc_cli.model.encoder import MEASURE_FRAMES, FrameEncoder
from tcmgc_cli.options import ExtractOptions
from tcmgc_cli.precision import observe

DEFAULT_BACKEND = VideoBackend(BACKEND)


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


class _Tracks:
    """Decoded stretches -> tracks: frames through the image tower once, in blocks that run across stretches and
    videos; a video's track is complete once its last stretch is encoded. Only features are kept of encoded frames
    (and the frames themselves with store_frames), so a long video's decoded frames never pile up.

    On a CPU small blocks stay in cache: 32 frames run 1.2-1.5x faster than 128 for ViT-B/32 in bf16 and
    MobileCLIP2-S0 on this project's CPU; a GPU wants large ones."""

    def __init__(self, encoder: FrameEncoder, store_frames: bool) -> None:
        self.encoder, self.store_frames = encoder, store_frames
        self.block = 256 if encoder.device.type == "cuda" else 32
        self.pending: list[Decoded] = []  # decoded, not encoded yet
        self.open: dict[str, list[tuple[Decoded, np.ndarray]]] = {}  # video id -> its encoded stretches so far
        self.done: list[
            tuple[Track, int, str]
        ] = []  # complete tracks, each with its frames that did not decode, its file
        self.encode_s = 0.0

    def add(self, stretch: Decoded) -> None:
        self.pending.append(stretch)
        if sum(len(d.frames) for d in self.pending) >= self.block:
            self.encode()

    def complete(self) -> int:
        """Videos whose every stretch is decoded (encoded or not)."""
        return len(self.done) + sum(d.last for d in self.pending)

    def encode(self) -> None:
        start = time.perf_counter()
        frames = np.concatenate([d.frames for d in self.pending])  # (sum n_i, S, S, 3)
        blocks = [self.encoder(torch.from_numpy(frames[i : i + self.block])) for i in range(0, len(frames), self.block)]
        feats = torch.cat(blocks).numpy() if blocks else np.zeros((0, 0), np.float32)  # (sum n_i, D)
        offsets = np.cumsum([0, *(len(d.frames) for d in self.pending)])
        for i, d in enumerate(self.pending):
            kept = d if self.store_frames else dataclasses.replace(d, frames=d.frames[:0])
            self.open.setdefault(d.job.video_id, []).append((kept, feats[offsets[i] : offsets[i + 1]]))
            if d.last:
                self.done.append(self._track(self.open.pop(d.job.video_id)))
        self.pending = []
        self.encode_s += time.perf_counter() - start

    def _track(self, parts: list[tuple[Decoded, np.ndarray]]) -> tuple[Track, int, str]:
        first, info = parts[0][0], parts[0][0].info
        got = [(d, f) for d, f in parts if len(d.times)]  # stretches where any frame decoded
        pixels = np.concatenate([d.frames for d, _ in got]) if self.store_frames else None  # (n, S, S, 3)
        track = Track(first.job.video_id, np.concatenate([d.times for d, _ in got]), np.concatenate([f for _, f in got]),
                      np.concatenate([d.indices for d, _ in got]), info.duration, str(first.job.path.resolve()),
                      info.size, info.mtime_ns, info.sha1, pixels)  # fmt: skip
        return track, sum(d.dropped for d, _ in parts), str(first.job.path)


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
    backend: VideoBackend = DEFAULT_BACKEND,
    workers: int | None = None,
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
    if workers is None:  # by the device (`ExtractOptions.decoders`)
        workers = ExtractOptions().decoders(encoder.device.type == "cuda")
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
    _check_precision(encoder, report)
    report.wall_s = time.perf_counter() - start
    return merge_reports(dist.gather_objects(report)) if dist.world > 1 else report


OBSERVED_S = 20.0  # encoding time enough to check an `auto` precision record against (short runs are noise)


def _check_precision(encoder: FrameEncoder, report: ExtractReport) -> None:
    """Hold the precision record `auto` followed to what this extraction's encoding saw (`precision.observe`)."""
    if encoder.role is not None and report.frames and report.encode_s >= OBSERVED_S:
        observe(encoder.role, encoder.device, encoder.precision, report.encode_s / report.frames * MEASURE_FRAMES)


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
    decode = Decoder(rule.fps, encoder.preprocess, backend, decoding.STRETCH)
    tracks = _Tracks(encoder, settings.store_frames)

    def flush() -> None:
        if tracks.pending:
            tracks.encode()
        if not tracks.done:
            return
        writer.add([t for t, _, _ in tracks.done])
        for t, dropped, path in tracks.done:
            report.extracted.append(t.video_id)
            report.entries += len(video_entries(t.video_id, len(t.times), rule))
            report.frames += len(t.times)
            report.video_seconds += t.duration
            if dropped:
                report.partial.append(Failure(t.video_id, path, f"{dropped} of {dropped + len(t.times)} frames do "
                                              "not decode; the others are kept"))  # fmt: skip
        tracks.done.clear()

    for result in decode_stream(todo, decode, workers, window=max(2 * workers, 2 * batch_size)):
        if isinstance(result, Decoded):
            report.decode_s += result.seconds
            tracks.add(result)
            if tracks.complete() >= batch_size:
                flush()
            if not result.last:
                continue
        elif isinstance(result, Unchanged):
            report.cached.append(result.job.video_id)
        else:
            report.failed.append(result)
        done += 1
        if on_progress:
            on_progress(done, len(jobs))
    flush()
    report.encode_s += tracks.encode_s
