import pickle
from pathlib import Path

import numpy as np
import pytest

from tcmgc_cli.data.video import VideoBackend, open_video, read_frames, read_later, read_video
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


def gop_video(path: Path, frames: np.ndarray, keyframe_every: int, bframes: int = 0) -> Path:
    """H.264 with a keyframe every `keyframe_every` frames. Without B-frames: lossless, its packets in presentation
    order. With them (x264 drops B-frames when lossless, so then at crf 18): open groups of pictures, where a B-frame
    before a keyframe refers across it, and packets out of presentation order."""
    import av

    gop = f"keyint={keyframe_every}:min-keyint={keyframe_every}:scenecut=0:bframes={bframes}:b-adapt=0"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if bframes else "libx264rgb", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if bframes else "rgb24"
        gop += ":open-gop=1" if bframes else ""
        stream.options = {"crf": "18" if bframes else "0", "threads": "1", "x264-params": gop}
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
    need = reader.stretch(wanted).need
    assert need is not None and np.flatnonzero(reader._keyframes).tolist() == [0, 20, 40, 60, 80]
    assert np.flatnonzero(need).tolist() == [0, *range(20, 26), *range(40, 51), *range(60, 76)]  # keyframe to frame
    got, times = reader.get_frames(wanted)
    reader._in_order = False  # every packet decoded, as for a stream with B-frames
    assert reader.stretch(wanted).need is None
    every, every_times = reader.get_frames(wanted)
    assert np.array_equal(got, every) and np.array_equal(got, frames[wanted]) and np.array_equal(times, every_times)
    assert np.array_equal(open_video(path, VideoBackend.decord).get_frames(wanted)[0], got)


@pytest.mark.parametrize(
    ("backend", "bframes"), [(VideoBackend.pyav, 0), (VideoBackend.pyav, 2), (VideoBackend.decord, 0)]
)
def test_a_track_decoded_in_stretches_equals_it_decoded_in_one_pass(
    tmp_path: Path, backend: VideoBackend, bframes: int
) -> None:
    """A long track decodes as stretches: the first where it is read, the others (pickled, as they travel to decoder
    processes) each from the keyframe before it, with or without B-frames and open groups of pictures: the same
    frames, times and numbers as one pass, bit for bit. (decord is left out with B-frames: its one pass already
    differs from decoding every frame in order there, as its seeking does.)"""
    frames = random_frames(100, size=32)
    path = gop_video(tmp_path / "gop.mp4", frames, keyframe_every=20, bframes=bframes)
    wanted = list(range(0, 100, 6))  # 17 frames: stretches of 4 (the first, half a stretch), 8, 5

    def choose(reader: object) -> list[int]:
        return wanted

    whole = read_frames(path, choose, backend)
    first = read_frames(path, choose, backend, stretch=8)
    later = [pickle.loads(pickle.dumps(p)) for p in first.later]
    assert first.indices == wanted[:4] and [p.indices for p in later] == [wanted[4:12], wanted[12:]]
    got = [first, *(read_later(p) for p in later)]
    assert np.array_equal(np.concatenate([g.frames for g in got]), whole.frames)
    assert [i for g in got for i in g.indices] == wanted
    assert np.array_equal(whole.frames, frames[wanted]) if not bframes else not open_video(path)._in_order
    assert np.array_equal(np.concatenate([g.times for g in got]), whole.times) and first.duration == whole.duration
    if backend == VideoBackend.pyav:  # each stretch starts at the keyframe before its first frame, not at frame 0
        assert [p.stretch.lo for p in later] == [20, 60]
        for p in later:  # without B-frames: each frame's keyframe up to it; with them, a few frames past the end
            runs = {n for i in p.indices for n in range(i - i % 20, i + 1)}
            assert (
                p.stretch.packets == len(runs)
                if bframes == 0
                else p.stretch.packets <= p.indices[-1] - p.stretch.lo + 8
            )
            if bframes:  # the B-frames no other frame refers to, and that are not asked for, are never decoded
                assert p.stretch.decoded < p.stretch.packets - 5
