"""Which videos an extraction takes: the files of a folder by id (never a path outside it), and what has gone."""

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.data.video import VIDEO_EXTENSIONS
from tcmgc_cli.errors import ConfigError


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


def plan_jobs(
    folder: Path, ids: Iterable[str] | None = None, files: dict[str, str] | None = None
) -> tuple[list[VideoJob], list[Failure], list[str]]:
    """Jobs for every video in `folder` (or only the listed `ids`; `files` gives the exact file name of an id where a
    dataset names it), failures for ids that cannot be served, and the names of files that are not videos."""
    files = files or {}
    wanted = list(dict.fromkeys(ids)) if ids is not None else None
    by_id, ignored = scan_folder(folder) if wanted is None or any(v not in files for v in wanted) else ({}, [])
    jobs: list[VideoJob] = []
    failed: list[Failure] = []
    for vid in wanted if wanted is not None else list(by_id):
        name = files.get(vid)
        if _escapes(folder, name or vid):
            failed.append(Failure(vid, vid, f"id {vid!r} points outside {folder}; video ids must be plain file names"))
        elif name is not None:
            path = folder / name
            if path.is_file():
                jobs.append(VideoJob(vid, path))
            else:
                failed.append(Failure(vid, str(path), f"no video file named {name} under {folder}"))
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


def files_gone(cache_path: Path, folder: Path) -> list[str]:
    """The cached videos extracted from under `folder` whose files are no longer there (by id). Refuses when the
    folder is missing or holds none of the cache's videos from it (an unmounted drive must never empty a library)."""
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
