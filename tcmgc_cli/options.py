"""What a command is asked to do, typed and checked before anything loads (torch-free, like `config.py`): an
extraction's options, where search's coarse stage runs, a search's queries and options, the flags of training."""

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tcmgc_cli.config import PADDINGS, TrackConfig
from tcmgc_cli.defaults import BACKEND, BATCH_VIDEOS, DECODERS, DEVICE, FPS, GPU_DECODERS, MODEL, PRECISION
from tcmgc_cli.errors import ConfigError

BACKENDS = ("decord", "pyav")
EXTRACT_RENAMED = {"clip_seconds": "window_seconds", "clip_stride": "window_stride"}  # keywords of tcmgc 0.1


@dataclass(frozen=True)
class ExtractOptions:
    """The settings of an extraction (the defaults are `tcmgc extract`'s)."""

    model: str = MODEL  # model config whose image tower encodes the frames
    cache: Path | None = None  # the cache file; None: the workspace's cache for `model`
    pretrained: str | None = None  # CLIP weights: an open_clip tag or a file; None: the model config's
    num_frames: int | None = None  # T, frames per scored entry; None: the model config's
    fps: float = FPS  # track rate: frames decoded and encoded per second of video
    padding: str = "zero"  # an entry with fewer frames than T: "zero" (the reference) or "repeat"
    window_seconds: float | None = None  # windows scored as entries; None: T frames; 0: one entry per video
    window_stride: float | None = None  # seconds between window starts; None: half a window
    batch_size: int = BATCH_VIDEOS  # videos per image-tower batch and per cache segment
    workers: int | None = DECODERS  # decoder processes; 0 decodes in the calling process; None: by the device
    store_frames: bool = False  # also keep the preprocessed uint8 frames (for end-to-end fine-tuning)
    backend: str = BACKEND  # video decoder: pyav or decord
    device: str = DEVICE
    precision: str = PRECISION  # fp32, bf16, or auto (as the cache began, else the faster here)
    verify: bool = False  # read every cached row first; re-extract damaged ones
    threads: int | None = None  # at most this many CPU threads and decoder processes; None: every core

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {self.batch_size}).")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be at least 0 (got {self.workers}); 0 decodes in this process.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {self.threads}); leave it out to use every core.")
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"--num-frames must be at least 1 (got {self.num_frames}).")
        if self.padding not in PADDINGS:
            raise ConfigError(f"unknown --padding {self.padding!r}: use one of {', '.join(PADDINGS)}.")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown --backend {self.backend!r}: use one of {', '.join(BACKENDS)}.")

    @classmethod
    def of(cls, base: "ExtractOptions | None" = None, **settings: Any) -> "ExtractOptions":
        """`base` (default: the defaults) with `settings` by field name; None leaves a field as it is."""
        settings = {EXTRACT_RENAMED.get(k, k): v for k, v in settings.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown extract option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}.")
        return replace(base or cls(), **{k: v for k, v in settings.items() if v is not None})

    def rule(self, model_frames: int) -> TrackConfig:
        """The cache's track rule: this rate, and entries of T frames (the model's `model_frames` unless set)."""
        frames = self.num_frames or model_frames
        return TrackConfig.from_seconds(self.fps, frames, self.window_seconds, self.window_stride, self.padding)

    def decoders(self, gpu: bool) -> int:
        """Decoder processes: `workers`, at most `threads`. By default none on a CPU: there the tower's threads keep
        every core busy, and a decoder process beside them slowed extraction more than it hid decoding (and costs ~2 s
        to start; README, Benchmarks); on a GPU one per core but one, at most GPU_DECODERS: decoding limits the rate
        there, and a long video's stretches decode in parallel."""
        workers = self.workers
        if workers is None:
            workers = min(GPU_DECODERS, max(1, (os.cpu_count() or 2) - 1)) if gpu else 0
        return min(workers, self.threads) if self.threads is not None else workers


ENGINE_INDEX_TYPES = ("flat", "ivf_sq8", "hnsw")


@dataclass(frozen=True)
class EngineConfig:
    """Where the search's coarse stage runs: the built-in index (`uri` None), Milvus Lite (a path ending in `.db`)
    or a Milvus server or cluster (`http://HOST:PORT`, `https://...` with `token`)."""

    uri: str | None = None
    index_type: str = "flat"  # flat (exact), ivf_sq8 or hnsw (approximate, for large collections)
    token: str = ""  # TCMGC_INDEX_TOKEN: user:password or an API key
    batch: int = 256  # videos encoded and written at a time when syncing (a kill loses at most this batch)

    def __post_init__(self) -> None:
        uri = self.uri
        if uri is not None and not (uri.endswith(".db") or uri.startswith(("http://", "https://"))):
            raise ConfigError(f"--index {uri!r}: use a Milvus Lite file (a path ending in .db) or a Milvus server "
                              "(http://HOST:PORT or https://...).")  # fmt: skip
        if self.index_type not in ENGINE_INDEX_TYPES:
            raise ConfigError(f"unknown --index-type {self.index_type!r}: use one of {', '.join(ENGINE_INDEX_TYPES)}.")

    @classmethod
    def of(cls, uri: str | None = None, index_type: str = "flat", batch: int = 256) -> "EngineConfig":
        """--index (else $TCMGC_INDEX; empty: the built-in index), its token from $TCMGC_INDEX_TOKEN."""
        chosen = uri if uri is not None else os.environ.get("TCMGC_INDEX")
        return cls(chosen or None, index_type, os.environ.get("TCMGC_INDEX_TOKEN", ""), batch)


def check_search(queries: list[str], top_k: int, candidates: int, per_video: int, moments: int) -> None:
    """A search's queries and options, checked before anything loads: each error names the flag and the value."""
    empty = [i for i, q in enumerate(queries) if not q.strip()]
    if empty:
        raise ConfigError(f'query {empty[0] + 1} is empty: write a few words, e.g. tcmgc search "a dog runs".')
    for flag, value, least in (("--top-k", top_k, 1), ("--candidates", candidates, 1), ("--per-video", per_video, 1),
                               ("--moments", moments, 0)):  # fmt: skip
        if value < least:
            raise ConfigError(f"{flag} must be at least {least} (got {value}).")


def train_keys(
    epochs: int | None = None, batch_size: int | None = None, lr: float | None = None, seed: int | None = None,
    precision: str | None = None, freeze_backbone: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """The TrainConfig keys that the commands' flags set (None: left to the recipe)."""
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision}
    return {k: v for k, v in flags.items() if v is not None} | ({"freeze": "all"} if freeze_backbone else {})
