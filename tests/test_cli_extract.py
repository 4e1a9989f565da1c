import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache, read_failures
from tcmgc_cli.cli import app
from tests.helpers import SAMPLE_MSRVTT, random_frames, write_video

runner = CliRunner()
TINY = ["--model", "tcmgc-tiny", "--workers", "0", "--json"]


def run(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["extract", *args])
    payload = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, payload, result.output


def test_sample_dataset_fills_the_default_cache(tmp_path: Path) -> None:
    code, out, _ = run("--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), "--model", "tcmgc-tiny", "--json")
    assert code == 0 and out["failed"] == [] and len(out["extracted"]) == 120
    cache = FeatureCache(tmp_path / "workspace" / "cache" / "tcmgc-tiny.h5")
    assert Path(out["cache"]) == cache.path and len(cache) == 120 and "video119" in cache
    emb = cache.entry_inputs(["video7"])[0][0]
    assert emb.shape == (8, 32) and np.isfinite(emb).all() and emb.std() > 0
    assert cache.settings.encoder == "tcmgc-tiny" and cache.settings.num_frames == 8
    assert (
        out["frames"] == sum(cache.num_frames_of(v) for v in cache.videos()) and out["frames_per_video_second"] == 1.0
    )
    code, again, _ = run("--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), *TINY)
    assert code == 0 and again["extracted"] == [] and sorted(again["cached"]) == sorted(out["extracted"])


def test_tracks_equal_the_encoder_on_decoded_frames(video_dir: Path, tmp_path: Path) -> None:
    """What the cache holds is exactly the frame encoder applied to the track's frames (the first frame of every
    second, preprocessed), each encoded once."""
    import torch

    from tcmgc_cli.data.sampling import fps_candidates
    from tcmgc_cli.data.transforms import resize_crop
    from tcmgc_cli.data.video import open_video
    from tcmgc_cli.model.encoder import FrameEncoder

    cache_path = tmp_path / "c.h5"
    code, _, _ = run("--videos", str(video_dir), "--cache", str(cache_path), "--num-frames", "5", "--fps", "2", *TINY)
    assert code == 0
    enc = FrameEncoder.load("tcmgc-clip-tiny", None, "cpu")
    reader = open_video(video_dir / "video2.mp4")
    idx = fps_candidates(reader.num_frames, reader.fps, 2.0)  # 4 fps video at 2 fps: every second frame
    assert idx == list(range(0, reader.num_frames, 2))
    frames, times = reader.get_frames(idx)
    want = enc(torch.from_numpy(resize_crop(frames, enc.preprocess))).numpy()
    cache = FeatureCache(cache_path)
    got_times, got = cache.track("video2")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_times, times)


def _bad_folder(video_dir: Path) -> Path:
    good = (video_dir / "video0.mp4").read_bytes()
    (video_dir / "empty.mp4").write_bytes(b"")
    (video_dir / "text.mp4").write_text("this is not a video\n" * 20)
    (video_dir / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (video_dir / "vidéo avec espaces.mp4").write_bytes(good)
    (video_dir / "video1.avi").write_bytes(good)  # duplicate id video1
    (video_dir / "notes.txt").write_text("not a video")
    write_video(video_dir / "short.mp4", random_frames(2, size=64))
    return video_dir


def test_bad_inputs_never_abort_and_are_retried(video_dir: Path, tmp_path: Path) -> None:
    folder = _bad_folder(video_dir)
    cache_path = tmp_path / "c.h5"
    code, out, output = run("--videos", str(folder), "--cache", str(cache_path), *TINY)
    assert code == 0 and "Warning" in output
    assert sorted(out["extracted"]) == ["short", "video0", "video1", "video2", "video3", "vidéo avec espaces"]
    failed = {f["id"]: f for f in out["failed"]}
    assert set(failed) == {"empty", "text", "truncated", "video1"}
    assert "empty" in failed["empty"]["reason"] and "duplicate" in failed["video1"]["reason"]
    assert failed["video1"]["path"].endswith("video1.mp4") and "video1.avi is used" in failed["video1"]["reason"]
    assert out["ignored"] == ["notes.txt"]
    assert set(read_failures(cache_path)) == set(failed)
    cache = FeatureCache(cache_path)
    assert cache.num_frames_of("short") == 1 and cache.entry_inputs(["short"])[0][0].shape == (
        8,
        32,
    )  # 2 frames at 4 fps: 0.5 s
    # fix one broken file: the rerun retries failures, extracts it and keeps everything else
    shutil.copy(folder / "video3.mp4", folder / "text.mp4")
    code, again, _ = run("--videos", str(folder), "--cache", str(cache_path), *TINY)
    assert code == 0 and again["extracted"] == ["text"]
    assert {f["id"] for f in again["failed"]} == {"empty", "truncated", "video1"}
    assert len(FeatureCache(cache_path).videos()) == 7


def test_ids_escaping_the_folder_and_missing_ids(video_dir: Path, tmp_path: Path) -> None:
    listing = tmp_path / "ids.csv"
    listing.write_text("video_id\nvideo0\n../../etc/passwd\nvideo404\n")
    code, out, _ = run(
        "--videos", str(video_dir), "--annotations", str(listing), "--cache", str(tmp_path / "c.h5"), *TINY
    )
    assert code == 0 and out["extracted"] == ["video0"]
    reasons = {f["id"]: f["reason"] for f in out["failed"]}
    assert "outside" in reasons["../../etc/passwd"] and "no video file" in reasons["video404"]


def test_nothing_succeeded_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    code, out, _ = run("--videos", str(folder), "--cache", str(tmp_path / "c.h5"), *TINY)
    assert code == 1 and out["failed"][0]["id"] == "a"


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "either --videos"),
        (["--videos", "nowhere"], "not a folder"),
        (["--dataset", "msrvtt"], "--data-root"),
        (["--videos", str(SAMPLE_MSRVTT / "videos"), "--num-frames", "0"], "--num-frames"),
        (["--videos", str(SAMPLE_MSRVTT / "videos"), "--model", "nope"], "unknown model"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(
        app, ["extract", *args, "--model", "tcmgc-tiny"] if "--model" not in args else ["extract", *args]
    )
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_other_encoder_cache_is_a_one_line_error(video_dir: Path, tmp_path: Path) -> None:
    cache_path = tmp_path / "c.h5"
    assert run("--videos", str(video_dir), "--cache", str(cache_path), *TINY)[0] == 0
    code, _, output = run("--videos", str(video_dir), "--cache", str(cache_path), "--num-frames", "4", *TINY)
    assert code == 1 and "other settings" in output and "--cache NEW.h5" in output


def test_worker_processes_give_the_same_cache(video_dir: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert run("--videos", str(video_dir), "--cache", str(a), *TINY)[0] == 0
    code, out, _ = run("--videos", str(video_dir), "--cache", str(b), "--model", "tcmgc-tiny", "--workers", "2",
                       "--batch-size", "3", "--json")  # fmt: skip
    assert code == 0 and len(out["extracted"]) == 4
    ca, cb = FeatureCache(a), FeatureCache(b)
    for vid in ca.ids():  # the frames meet the image tower in other batches: float32 round-off at most
        np.testing.assert_allclose(ca.entry_inputs([vid])[0][0], cb.entry_inputs([vid])[0][0], rtol=1e-5, atol=1e-6)


def test_decoder_processes_by_default_only_where_a_gpu_encodes() -> None:
    """On a CPU the tower's threads use every core, so by default frames decode in the extracting process; on a
    GPU one decoder process per core but one (at most 8); --workers and --threads still say otherwise."""
    from tcmgc_cli.options import ExtractOptions

    cores = os.cpu_count() or 2
    assert ExtractOptions().decoders(gpu=False) == 0
    assert ExtractOptions().decoders(gpu=True) == min(8, max(1, cores - 1))
    assert (
        ExtractOptions(workers=3).decoders(gpu=False) == 3
        and ExtractOptions(workers=3, threads=2).decoders(gpu=True) == 2
    )
