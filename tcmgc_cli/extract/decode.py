"""Decoding: each video's track (its frames at the cache's rate, resized and cropped on uint8) in worker processes,
a bounded window of them ahead of the encoder. A bad file never raises here: it comes back as a Failure."""

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tcmgc_cli.data.sampling import fps_candidates
from tcmgc_cli.data.transforms import Preprocess, resize_crop
from tcmgc_cli.data.video import VideoBackend, read_frames
from tcmgc_cli.errors import TcmgcError
from tcmgc_cli.extract.scan import Failure, VideoJob, file_sha1


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


def decode_stream(
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
class Decoder:
    """Picklable decode function for the worker pool."""

    fps: float
    pp: Preprocess
    backend: VideoBackend

    def __call__(self, job: VideoJob, known: str | None) -> Decoded | Unchanged | Failure:
        return decode_job(job, self.fps, self.pp, self.backend, known)
