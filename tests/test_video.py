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
    with pytest.raises(VideoDecodeError, match="(decord.*pyav|pyav.*decord)"):
        read_video(cut, lambda n, fps: [0])


def gop_video(path: Path, frames: np.ndarray, keyframe_every: int) -> Path:
    """Lossless H.264 with a keyframe every `keyframe_every` frames and no B-frames (packets in presentation order)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        stream.options = {"crf": "0", "threads": "1", "x264-params": f"keyint={keyframe_every}:min-keyint="
                          f"{keyframe_every}:scenecut=0:bframes=0"}  # fmt: skip
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        container.mux(stream.encode())
    return path


def test_pyav_decodes_only_the_packets_the_frames_need(tmp_path: Path) -> None:
    """Frames 0, 25, 50, ... of a 25 fps video with a keyframe every 20 frames: each needs the packets from its
    keyframe up to itself and nothing after, so about half the packets are never decoded, and every frame kept is
    bit-identical to the one decoding every packet gives (and to decord's)."""
    frames = random_frames(100, size=32)
    path = gop_video(tmp_path / "gop.mp4", frames, keyframe_every=20)
    reader = open_video(path, VideoBackend.pyav)
    wanted = [0, 25, 50, 75]
    need = reader.needed(wanted)
    assert need is not None and np.flatnonzero(reader._keyframes).tolist() == [0, 20, 40, 60, 80]
    assert np.flatnonzero(need).tolist() == [0, *range(20, 26), *range(40, 51), *range(60, 76)]  # keyframe to frame
    got, times = reader.get_frames(wanted)
    reader._in_order = False  # every packet decoded, as for a stream with B-frames
    assert reader.needed(wanted) is None
    every, every_times = reader.get_frames(wanted)
    assert np.array_equal(got, every) and np.array_equal(got, frames[wanted]) and np.array_equal(times, every_times)
    assert np.array_equal(open_video(path, VideoBackend.decord).get_frames(wanted)[0], got)
