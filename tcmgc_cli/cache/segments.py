"""The cache's files: the root file's settings and the immutable segment files of frame tracks.

    X.h5        written once: the settings (schema, encoder and its weights fingerprint, track rate, entry rule,
                image size) and the padding feature
    X.h5.d/seg-<ns>-<pid>-<generation>.h5, each holding the frame tracks of some videos:
        videos/ids (n,) str | videos/uids str | videos/paths | videos/sizes i8 | videos/mtimes i8 | videos/sha1 str
        videos/durations f8 | videos/offsets i8 | videos/counts i8     video v's frames are rows offset..offset+count
        frames/features (F, D) f4 | frames/times (F,) f8 | frames/indices (F,) i8 | [frames/pixels (F, S, S, 3) u1]
        removed (m,) str                                               videos this segment deletes from older ones

Segments are ordered by name: a later segment's track of a video replaces the older ones, and its `removed` list
deletes videos from older segments. A track's uid ("<segment stem>:<row>", where it was first written) names it for
good, through merges. Every file is built under a temporary name, fsynced and renamed into place; numbers carry
HDF5's Fletcher-32 checksums over chunks of rows, verified on every read.
"""

import contextlib
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tcmgc_cli import __version__
from tcmgc_cli.config import TrackConfig
from tcmgc_cli.errors import CacheError
from tcmgc_cli.fileio import atomic_path, describe_os_error

SCHEMA_VERSION = 2
CHUNK_ROWS = 8  # frames per checksummed chunk of features
STR = h5py.string_dtype("utf-8")
_SEGMENT = re.compile(r"^seg-(\d+)-(\d+)-(\d+)\.h5$")
VIDEO_COLUMNS: dict[str, Any] = {  # the per-video table: name -> dtype
    "ids": STR, "uids": STR, "paths": STR, "sizes": np.int64, "mtimes": np.int64, "sha1": STR,
    "durations": np.float64, "offsets": np.int64, "counts": np.int64,
}  # fmt: skip


@dataclass(frozen=True)
class CacheSettings:
    """What must agree between a cache and a run that reads or extends it."""

    encoder: str  # model name, e.g. the default model's
    encoder_fingerprint: str  # open_clip name + hash of the image tower's weights
    image_size: int  # crop side in pixels
    track: dict[str, Any]  # TrackConfig.to_dict(): track rate and the entry rule
    store_frames: bool = False  # whether the tracks' preprocessed uint8 frames are kept

    @property
    def tracks(self) -> TrackConfig:
        return TrackConfig(**self.track)

    @property
    def num_frames(self) -> int:
        """T: frames per scored entry."""
        return int(self.track["num_frames"])

    @property
    def precision(self) -> str:
        """The precision the features were computed in (a cache never mixes them)."""
        return next((p for p in ("bf16", "int8") if self.encoder_fingerprint.endswith(f":{p}")), "fp32")

    @property
    def weights_fingerprint(self) -> str:
        """The encoder's fingerprint without its precision: the weights alone."""
        return self.encoder_fingerprint.removesuffix(f":{self.precision}")

    def mismatch(self, other: "CacheSettings") -> str | None:
        """A sentence naming the first difference, or None when `other` may share this cache."""
        for key in ("encoder_fingerprint", "track", "image_size", "store_frames"):
            mine, theirs = getattr(self, key), getattr(other, key)
            if mine != theirs:
                return f"{key} is {mine} in the cache but {theirs} in this run"
        return None


@dataclass
class Track:
    """One video's frame track and its provenance."""

    video_id: str
    times: np.ndarray  # (n,) float64 start time of each frame, seconds (the first is 0)
    features: np.ndarray  # (n, D) float32 CLIP image features, one per frame
    frame_indices: np.ndarray  # (n,) int64 decoded frame number of each row (-1: not from a decoder)
    duration: float  # seconds: the end of the video
    path: str = ""
    size: int = 0  # bytes of the source file
    mtime_ns: int = 0
    sha1: str = ""  # content fingerprint of the source file ("" when not computed)
    pixels: np.ndarray | None = field(default=None, repr=False)  # (n, S, S, 3) uint8, with store_frames


def segment_key(path: Path) -> tuple[int, int, int]:
    found = _SEGMENT.match(path.name)
    return (int(found.group(1)), int(found.group(2)), int(found.group(3))) if found else (0, 0, 0)


def is_segment(path: Path) -> bool:
    return _SEGMENT.match(path.name) is not None


# ---- writing ------------------------------------------------------------------------------------------------------
_images = itertools.count()


@contextlib.contextmanager
def atomic_h5(path: Path, in_memory: bool = True) -> Iterator[h5py.File]:
    """Write an HDF5 file under a temporary name; it appears at `path` only once complete and synced.

    in_memory: HDF5 builds the file in memory and plain file writes put it on disk, so that a full disk, a quota or
    a read-only folder is an OSError of ours (a CacheError naming the fix) and never a failed write inside HDF5,
    which leaves the library in a state that crashes the process at exit. Large merges write directly after
    checking the free space.
    """
    if in_memory:
        f = h5py.File(f"{path}.in-memory-{os.getpid()}-{next(_images)}", "w", driver="core", backing_store=False)
        try:
            yield f
            f.flush()
            image = f.id.get_file_image()
        finally:
            f.close()
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(image)
        except OSError as err:
            raise CacheError(f"cannot write {path.name}: {describe_os_error(err, path.parent)}") from None
        return
    echoes = io.StringIO()  # h5py's objects of a failed file print the error again as they are freed
    try:
        with atomic_path(path) as tmp, contextlib.redirect_stderr(echoes), h5py.File(tmp, "w", locking=False) as f:
            yield f
    except (OSError, RuntimeError) as err:
        raise CacheError(f"cannot write {path.name}: {describe_os_error(err, path.parent)}") from None
    sys.stderr.write(echoes.getvalue())


def column(f: h5py.File, name: str, dtype: Any, shape: tuple[int, ...], data: Any = None) -> h5py.Dataset:
    """A dataset; numbers carry Fletcher-32 checksums over chunks of rows, verified on every read. A chunk of frame
    features is CHUNK_ROWS frames (16 KB at D = 512): a damaged chunk names the few videos whose frames it holds."""
    if dtype is STR:
        return f.create_dataset(name, shape=shape, dtype=STR, data=data)
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, min(shape[0], 4096 if per_row == 1 else CHUNK_ROWS if per_row < 4096 else 1))
    return f.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=(rows, *shape[1:]) if shape[0] else None,
                            fletcher32=bool(shape[0]))  # fmt: skip


def write_attrs(f: h5py.File, settings: CacheSettings, frames: int = 0, replaces: Sequence[str] = ()) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["tcmgc_version"] = __version__
    f.attrs["settings"] = json.dumps(asdict(settings), sort_keys=True)
    f.attrs["frames"] = frames
    f.attrs["replaces"] = json.dumps(list(replaces))


def frame_shapes(dim: int, image_size: int, store_frames: bool) -> dict[str, tuple[tuple[int, ...], Any]]:
    """The frame columns: name -> (shape of one row, dtype)."""
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {"features": ((dim,), np.float32), "times": ((), np.float64),
                                                       "indices": ((), np.int64)}  # fmt: skip
    if store_frames:
        shapes["pixels"] = ((image_size, image_size, 3), np.uint8)
    return shapes


def write_table(f: h5py.File, table: dict[str, Any], rows: int) -> None:
    """The per-video table: VIDEO_COLUMNS -> (rows,) values."""
    for name, dtype in VIDEO_COLUMNS.items():
        column(f, f"videos/{name}", dtype, (rows,), np.asarray(table[name], dtype=object if dtype is STR else dtype))


def write_tracks(
    f: h5py.File, tracks: Sequence[Track], removed: Sequence[str], settings: CacheSettings, dim: int, stem: str
) -> None:
    counts = np.array([len(t.times) for t in tracks], dtype=np.int64)
    table = {
        "ids": [t.video_id for t in tracks], "uids": [f"{stem}:{i}" for i in range(len(tracks))],
        "paths": [t.path for t in tracks],
        "sizes": [t.size for t in tracks], "mtimes": [t.mtime_ns for t in tracks], "sha1": [t.sha1 for t in tracks],
        "durations": [t.duration for t in tracks], "offsets": np.cumsum(counts) - counts, "counts": counts,
    }  # fmt: skip
    write_table(f, table, len(tracks))
    total = int(counts.sum())
    stacks: dict[str, list[Any]] = {"features": [t.features for t in tracks], "times": [t.times for t in tracks],
                                    "indices": [t.frame_indices for t in tracks], "pixels": [t.pixels for t in tracks]}  # fmt: skip
    for name, (shape, dtype) in frame_shapes(dim, settings.image_size, settings.store_frames).items():
        data = np.concatenate(stacks[name]).astype(dtype) if tracks else None
        column(f, f"frames/{name}", dtype, (total, *shape), data)
    column(f, "removed", STR, (len(removed),), np.asarray(list(removed), dtype=object))


# ---- reading ------------------------------------------------------------------------------------------------------
def read_settings(f: h5py.File, path: Path) -> CacheSettings:
    version = int(f.attrs.get("schema_version", -1))
    if version == 1:
        old = json.loads(f.attrs["settings"]).get("encoder", "MODEL")
        raise CacheError(
            f"{path} uses the earlier cache layout (clips stored whole); this tcmgc stores frame tracks. Rebuild it: "
            f"delete {path.name} and {path.name}.d/, then rerun `tcmgc extract --model {old}` with your --videos or --dataset."
        )
    if version != SCHEMA_VERSION:
        raise CacheError(f"{path} has cache schema {version}, this tcmgc reads {SCHEMA_VERSION}: rebuild it with `tcmgc extract`.")  # fmt: skip
    return CacheSettings(**json.loads(f.attrs["settings"]))


@dataclass
class Segment:
    """One segment's per-video table, read once."""

    path: Path
    table: dict[str, np.ndarray]  # VIDEO_COLUMNS -> (n,)
    removed: list[str]
    row_of: dict[str, int]

    def span(self, video: str) -> tuple[int, int]:
        """A video's (first frame row, frame count) in this segment."""
        row = self.row_of[video]
        return int(self.table["offsets"][row]), int(self.table["counts"][row])


def read_segment(f: h5py.File, path: Path) -> Segment:
    try:
        table = {name: (f[f"videos/{name}"].asstr()[:] if dtype is STR else f[f"videos/{name}"][:])
                 for name, dtype in VIDEO_COLUMNS.items()}  # fmt: skip
        removed = list(f["removed"].asstr()[:])
    except KeyError:
        raise CacheError(f"segment {path} lacks a table this tcmgc reads: it is damaged or was written by another "
                         "version. Move the cache away and extract again.") from None  # fmt: skip
    ids = [str(v) for v in table["ids"]]
    return Segment(path, table, removed, dict(zip(ids, range(len(ids)), strict=True)))


def resolve(segments: Sequence[Segment]) -> dict[str, tuple[int, int]]:
    """The live videos of segments in order: video -> (segment position, row); later ones replace earlier ones."""
    live: dict[str, tuple[int, int]] = {}
    for pos, seg in enumerate(segments):
        for video in seg.removed:
            live.pop(video, None)
        for video, row in seg.row_of.items():
            live.pop(video, None)  # re-inserted: a replaced video moves to the end, in extraction order
            live[video] = (pos, row)
    return live


def check_finite(path: Path, ids: Sequence[str], rows: np.ndarray) -> None:
    """rows (N, ...) float: a CacheError naming the videos whose rows hold NaN or infinity."""
    finite = np.isfinite(rows.reshape(len(rows), -1)).all(1)  # (N, ...) -> (N, -1) -> (N,)
    if not finite.all():
        bad = list(dict.fromkeys(ids[int(i)] for i in np.flatnonzero(~finite)))
        raise CacheError(damaged_message(path, bad, "features hold NaN or infinity"))


def damaged_message(path: Path, ids: Sequence[str], detail: str) -> str:
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return (f"{path}: the cached features of {len(ids)} video(s) are damaged ({shown}; {detail}). "
            "Rerun your `tcmgc extract` command with --verify to re-extract them.")  # fmt: skip
