"""The SIGKILL drill: kill a real `tcmgc extract` at several moments, rerun, and compare with an uninterrupted run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tcmgc_cli.cache import FANOUT, FeatureCache
from tcmgc_cli.workspace import cache_folder as segment_dir
from tests.helpers import SAMPLE_MSRVTT

NUM_VIDEOS = 24


def _command(videos: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "tcmgc_cli", "extract", "--videos", str(videos), "--cache", str(cache),
            "--model", "tcmgc-tiny", "--workers", "0", "--batch-size", "2", "--json"]  # fmt: skip


def _run_until(videos: Path, cache: Path, when: Callable[[], bool], timeout: float = 60) -> bool:
    """Start an extract, SIGKILL it as soon as `when()` holds; False if it finished first."""
    proc = subprocess.Popen(_command(videos, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if when():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


def _segments(cache: Path) -> int:
    folder = segment_dir(cache)
    return len(list(folder.glob("seg-*.h5"))) if folder.is_dir() else 0


def _assert_consistent(cache: Path, baseline: FeatureCache) -> int:
    """The cache opens, and every video in it equals the uninterrupted run's (nothing half-written)."""
    if not cache.exists():
        return 0
    partial = FeatureCache(cache)
    for vid in partial.ids():
        np.testing.assert_array_equal(partial.entry_inputs([vid])[0][0], baseline.entry_inputs([vid])[0][0])
    n = len(partial)
    partial.close()
    return n


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_completes(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for n in range(NUM_VIDEOS):
        shutil.copy(SAMPLE_MSRVTT / "videos" / f"video{n}.mp4", videos / f"video{n}.mp4")
    base_path = tmp_path / "baseline.h5"
    subprocess.run(_command(videos, base_path), check=True, capture_output=True)
    baseline = FeatureCache(base_path)
    assert len(baseline) == NUM_VIDEOS

    cache = tmp_path / "drill.h5"
    start = time.monotonic()
    kill_points: list[tuple[str, Callable[[], bool]]] = [
        ("during start-up", lambda: time.monotonic() - start > 1.0),
        ("after the first segment", lambda: _segments(cache) >= 1),
        ("mid-run", lambda: _segments(cache) >= 4),
        ("during a merge", lambda: any(segment_dir(cache).glob(".tmp-seg-*")) and _segments(cache) >= FANOUT),
    ]
    counts = []
    for _label, when in kill_points:
        start = time.monotonic()
        _run_until(videos, cache, when)
        counts.append(_assert_consistent(cache, baseline))
    assert counts == sorted(counts), "a rerun lost finished videos"
    assert counts[0] < NUM_VIDEOS, "no kill landed before the end"

    subprocess.run(_command(videos, cache), check=True, capture_output=True)
    final = FeatureCache(cache)
    assert sorted(final.ids()) == sorted(baseline.ids())
    for vid in baseline.ids():
        np.testing.assert_array_equal(final.entry_inputs([vid])[0][0], baseline.entry_inputs([vid])[0][0])
    assert len(final.segments()) < FANOUT  # runs of FANOUT segments of one size were merged
