from pathlib import Path

import numpy as np
import pytest

from tcmgc_cli.data.video import VideoBackend, open_video, read_video
from tcmgc_cli.errors import VideoDecodeError
from tests.helpers import random_frames, write_video


@pytest.mark.parametrize("backend", list(VideoBackend))
def test_lossless_video_decodes_bit_exact(tmp_path: Path, backend: VideoBackend) -> None:
    frames = random_frames(10, size=64)
    path = write_video(tmp_path / "exact.mp4", frames, fps=4)
    reader = open_video(path, backend)
    assert reader.num_frames == 10
    assert reader.fps == pytest.approx(4.0)
    got, times = reader.get_frames([0, 3, 3, 9])
    assert got.dtype == np.uint8 and got.shape == (4, 64, 64, 3)
    assert np.array_equal(got, frames[[0, 3, 3, 9]])
    np.testing.assert_allclose(times, [0.0, 0.75, 0.75, 2.25], atol=1e-6)


def test_decord_failure_falls_back_to_pyav(tmp_path: Path) -> None:
    """decord cannot copy out 48x48 RGB frames (a stride bug); read_video then decodes with PyAV, still exact."""
    frames = random_frames(6, size=48)
    path = write_video(tmp_path / "odd.mp4", frames)
    with pytest.raises(Exception, match="size must exactly match"):
        open_video(path, VideoBackend.decord).get_frames([0])
    got, times, indices = read_video(path, lambda n, fps: [0, n - 1], VideoBackend.decord)
    assert indices == [0, 5] and np.array_equal(got, frames[[0, 5]])


@pytest.mark.parametrize("content", [b"", b"definitely not a video" * 50])
def test_unreadable_files_raise_decode_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        open_video(path)


def test_truncated_video_names_both_decoders(tmp_path: Path) -> None:
    full = write_video(tmp_path / "full.mp4", random_frames(8)).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(VideoDecodeError, match="decord.*pyav"):
        read_video(cut, lambda n, fps: [0])
