"""Decoding: each video's track (its frames at the cache's rate, resized and cropped on uint8) in worker processes,
ahead of the encoder; a long video's track in stretches of STRETCH frames, so that its encoding starts after its
first stretch and its decoded frames never pile up. A bad file never raises here: it comes back as a Failure."""

import concurrent.futures as cf
import functools
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tcmgc_cli.data.sampling import fps_candidates
from tcmgc_cli.data.transforms import Preprocess, resize_crop
from tcmgc_cli.data.video import Later, VideoBackend, read_frames, read_later
from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.extract.scan import Failure, VideoJob, file_sha1

STRETCH = 64  # track frames a decode task takes: a long video decodes as stretches, ahead of the encoder


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds
    size: int
    mtime_ns: int
    sha1: str
    stretches: int  # the decode tasks its track takes


@dataclass
class Decoded:
    """One stretch of a video's track, decoded and preprocessed, before encoding: the whole track of a short video,
    or stretch `stretch` of `info.stretches` of a long one (the first carries the others, still to decode)."""

    job: VideoJob
    frames: np.ndarray  # (n, S, S, 3) uint8, resized and cropped
    times: np.ndarray  # (n,) start seconds
    indices: np.ndarray  # (n,) frame numbers
    dropped: int  # frames of the stretch that did not decode (left out)
    seconds: float  # time spent hashing and decoding
    info: VideoInfo
    stretch: int = 0
    later: list[Later] = field(default_factory=list)

    @property
    def last(self) -> bool:
        return self.stretch == self.info.stretches - 1


@dataclass
class Unchanged:
    job: VideoJob


def decode_job(
    job: VideoJob, fps: float, pp: Preprocess, backend: VideoBackend, known_sha1: str | None, stretch: int = STRETCH
) -> Decoded | Unchanged | Failure:
    """Hash one video, then decode and preprocess the first stretch of its track: its frames at `fps` (the first
    frame of every 1/fps-second slot), each decoded once. Never raises for bad input: returns a Failure instead."""
    start = time.perf_counter()
    try:
        stat = job.path.stat()
        sha1 = file_sha1(job.path)
        if known_sha1 == sha1:
            return Unchanged(job)
        got = read_frames(job.path, lambda r: fps_candidates(r.num_frames, r.fps, fps), backend,
                          lambda frames: resize_crop(frames, pp), stretch)  # fmt: skip
    except (TcmgcError, OSError) as err:
        return Failure(job.video_id, str(job.path), str(err))
    info = VideoInfo(got.duration, stat.st_size, stat.st_mtime_ns, sha1, 1 + len(got.later))
    return Decoded(job, got.frames, got.times.astype(np.float64), np.asarray(got.indices, dtype=np.int64),
                   got.dropped, time.perf_counter() - start, info, 0, got.later)  # fmt: skip


def decode_later(job: VideoJob, info: VideoInfo, k: int, later: Later, pp: Preprocess) -> Decoded:
    """Stretch `k` of a track, whose first stretch `decode_job` decoded; frames that do not decode are left out."""
    start = time.perf_counter()
    got = read_later(later, lambda frames: resize_crop(frames, pp))
    frames = got.frames if got.indices else np.zeros((0, pp.size, pp.size, 3), np.uint8)  # (n, S, S, 3)
    return Decoded(job, frames, got.times.astype(np.float64), np.asarray(got.indices, dtype=np.int64), got.dropped,
                   time.perf_counter() - start, info, k)  # fmt: skip


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


def decode_stream(
    jobs: list[tuple[VideoJob, str | None]], decode: "Decoder", workers: int, window: int
) -> Iterator[Decoded | Unchanged | Failure]:
    """Results in job order, a long video's stretches one after another. With workers > 0, decoding runs ahead in
    other processes: up to `window` videos started, and a few stretches of the video being yielded before them."""
    if workers == 0:
        for job, known in jobs:
            first = decode(job, known)
            yield first
            if isinstance(first, Decoded):
                yield from (decode.later(job, first.info, k, later) for k, later in enumerate(first.later, 1))
        return
    ctx = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        yield from _Ahead(pool, decode, jobs, workers, window).results()


class _Ahead:
    """The decode pool's queue, kept short (a stretch waits behind at most one other task) and filled in order of
    need: the next stretches of the video being yielded first, then the next videos."""

    def __init__(
        self, pool: cf.Executor, decode: "Decoder", jobs: list[tuple[VideoJob, str | None]], workers: int, window: int
    ) -> None:
        self.pool, self.decode, self.todo = pool, decode, iter(jobs)
        self.cap, self.window, self.ahead = workers + 1, window, 2 * workers
        self.started: deque[tuple[VideoJob, cf.Future[Decoded | Unchanged | Failure]]] = deque()
        self.stretches: deque[cf.Future[Decoded]] = deque()  # the current video's, submitted, in order
        self.unsent: deque[Callable[[], cf.Future[Decoded]]] = deque()  # the current video's, not submitted yet
        self.running: set[cf.Future[Any]] = set()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        fut = self.pool.submit(fn, *args)
        self.running.add(fut)
        return fut

    def _top_up(self) -> None:
        self.running = {f for f in self.running if not f.done()}
        while len(self.running) < self.cap:
            if self.unsent and len(self.stretches) < self.ahead:
                self.stretches.append(self.unsent.popleft()())
            elif len(self.started) < self.window and (item := next(self.todo, None)) is not None:
                self.started.append((item[0], self._submit(self.decode, *item)))
            else:
                return

    def _wait(self, fut: cf.Future[Any] | None, job: VideoJob) -> Any:
        """`fut`'s result (None: the next stretch once submitted), keeping the pool fed meanwhile."""
        while True:
            self._top_up()
            if fut is None and self.stretches:
                fut = self.stretches.popleft()
            if fut is not None and fut.done():
                break
            cf.wait(self.running | ({fut} if fut else set()), return_when=cf.FIRST_COMPLETED)
        try:
            return fut.result()
        except cf.process.BrokenProcessPool:
            raise TcmgcError(
                f"a decoder process crashed near {job.path.name}; rerun to continue (finished videos are kept), "
                "or move that file away"
            ) from None

    def results(self) -> Iterator[Decoded | Unchanged | Failure]:
        self._top_up()
        while self.started:
            job, fut = self.started.popleft()
            first = self._wait(fut, job)
            if isinstance(first, Decoded):
                for k, later in enumerate(first.later, 1):
                    self.unsent.append(functools.partial(self._submit, self.decode.later, job, first.info, k, later))
                first.later = []
                self._top_up()
            yield first
            while self.stretches or self.unsent:
                yield self._wait(None, job)


@dataclass
class Decoder:
    """Picklable decode functions for the worker pool."""

    fps: float
    pp: Preprocess
    backend: VideoBackend
    stretch: int = STRETCH

    def __call__(self, job: VideoJob, known: str | None) -> Decoded | Unchanged | Failure:
        return decode_job(job, self.fps, self.pp, self.backend, known, self.stretch)

    def later(self, job: VideoJob, info: VideoInfo, k: int, later: Later) -> Decoded:
        return decode_later(job, info, k, later, self.pp)
