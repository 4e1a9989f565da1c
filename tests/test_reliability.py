"""Never a wrong number, never lost work: NaN guards, run locks, checksums, one-line errors (issue 10).

Each test reproduces what a careful user did to break the tool and checks the outcome they should get.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tcmgc_cli.cache import CHUNK_ROWS, FeatureCache
from tcmgc_cli.cli import app
from tcmgc_cli.errors import CacheError, CheckpointError, NumericsError
from tests.helpers import QUICK, ROOT, SAMPLE_MSRVTT, copy_cache, one_line_error

runner = CliRunner()


def train_args(data: Path, cache: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(cache),
            "--output", str(out), *QUICK, *extra]  # fmt: skip


@pytest.fixture
def data(small_csv: Path) -> Path:
    return small_csv


@pytest.fixture
def run(trained_run: tuple[Path, Path]) -> Path:
    """The session's trained run (tcmgc-tiny, one epoch on `data` over sample_cache)."""
    return trained_run[0]


def scramble(path: Path, at: float, size: int, seed: int = 0) -> None:
    """Overwrite `size` bytes at fraction `at` of the file with random bytes, as a failing disk would."""
    raw = bytearray(path.read_bytes())
    start = int(len(raw) * at)
    raw[start : start + size] = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(raw))


def poison_row(cache: Path, video_id: str, value: float = float("nan")) -> None:
    """Write a non-finite value into one video's track through HDF5 (its checksum stays valid)."""
    reader = FeatureCache(cache)
    segment, row = reader._video(video_id)
    reader.close()
    with h5py.File(segment.path, "r+") as f:
        offset = int(f["videos/offsets"][row])
        feats = f["frames/features"][offset]
        feats[0] = value
        f["frames/features"][offset] = feats


# ---- 1. a diverged run never reports a number ------------------------------------------------------------------
def test_diverged_training_stops_with_one_line_and_no_checkpoint(
    data: Path, sample_cache: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, train_args(data, sample_cache, out, "--lr", "1e6"))
    message = one_line_error(result)
    assert "training diverged" in message and "learning rate" in message and "--lr" in message
    assert "step" in message
    assert not list((out / "checkpoints").glob("*.pt")), "a diverged run must not write a checkpoint"


def test_nan_row_in_cache_is_named_by_evaluate_and_train(
    data: Path, run: Path, sample_cache: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "c.h5"
    copy_cache(sample_cache, cache)
    poison_row(cache, "video13")  # a test video
    poison_row(cache, "video3")  # a training video
    args = ["--dataset", "csv", "--annotations", str(data), "--cache", str(cache)]
    message = one_line_error(runner.invoke(app, ["evaluate", "--checkpoint", str(run), *args]))
    assert "video13" in message and "--verify" in message
    message = one_line_error(runner.invoke(app, train_args(data, cache, tmp_path / "run2")))
    assert "video3" in message


def test_metrics_and_scores_refuse_nan() -> None:
    from tcmgc_cli.evaluation.retrieval import check_finite_scores
    from tcmgc_cli.metrics import retrieval_metrics

    scores = np.eye(3)
    scores[1, 2] = np.nan  # NaN was "never strictly higher": the old code ranked video 1's text first
    with pytest.raises(NumericsError):
        retrieval_metrics(scores, np.arange(3))
    with pytest.raises(NumericsError, match="c"):
        check_finite_scores(scores, ["a", "b", "c"], ["x", "y", "z"])
    with pytest.raises(NumericsError, match="weights are broken"):
        check_finite_scores(np.full((2, 2), np.nan), ["a", "b"], ["x", "y"])


def test_search_names_a_video_with_nan_features(run: Path, sample_cache: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    copy_cache(sample_cache, cache)
    poison_row(cache, "video5", float("inf"))
    message = one_line_error(
        runner.invoke(app, ["search", "a red circle", "--checkpoint", str(run), "--cache", str(cache)])
    )
    assert "video5" in message


# ---- 2 and 3. a finished run is never overwritten, and has one writer --------------------------------------------
def test_rerun_without_resume_refuses_then_overwrite_starts_over(
    data: Path, sample_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert runner.invoke(app, train_args(data, sample_cache, run)).exit_code == 0
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.pt")}
    log = (run / "metrics.jsonl").read_text()
    message = one_line_error(runner.invoke(app, train_args(data, sample_cache, run)))
    assert "--resume" in message and "--overwrite" in message
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.pt")} == before
    assert (run / "metrics.jsonl").read_text() == log
    again = runner.invoke(app, train_args(data, sample_cache, run, "--overwrite"))
    assert again.exit_code == 0, again.output
    assert (run / "metrics.jsonl").read_text().count('"kind": "epoch"') == 1  # started over, not appended


def test_second_writer_of_a_run_folder_is_refused(data: Path, sample_cache: Path, tmp_path: Path) -> None:
    from tcmgc_cli.fileio import FolderLock

    run = tmp_path / "run"
    with FolderLock(run, "held by the test"):  # as a first `tcmgc train --output run` holds it
        message = one_line_error(runner.invoke(app, train_args(data, sample_cache, run)))
    assert "being written by another tcmgc process" in message
    assert not (run / "metrics.jsonl").exists()


def test_ctrl_c_message_names_resume(
    monkeypatch: pytest.MonkeyPatch, data: Path, sample_cache: Path, tmp_path: Path
) -> None:
    from tcmgc_cli.training import Trainer

    def interrupted(self: Trainer, val: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    result = runner.invoke(app, train_args(data, sample_cache, tmp_path / "run"))
    assert result.exit_code == 130 and "--resume" in result.output


# ---- 4. silent corruption is detected ----------------------------------------------------------------------------
def test_scrambled_checkpoint_is_named_and_resume_falls_back(data: Path, sample_cache: Path, tmp_path: Path) -> None:
    from tcmgc_cli.checkpoint import read_checkpoint

    run = tmp_path / "run"
    two = [*train_args(data, sample_cache, run), "--set", "train.epochs=2"]
    assert runner.invoke(app, two).exit_code == 0
    last = run / "checkpoints" / "last.pt"
    scramble(last, 0.5, 4096)
    with pytest.raises(CheckpointError, match="damaged"):
        read_checkpoint(last)
    message = one_line_error(runner.invoke(app, ["evaluate", "--checkpoint", str(last), "--dataset", "csv",
                                                  "--annotations", str(data), "--cache", str(sample_cache)]))  # fmt: skip
    assert "last.pt is damaged" in message
    resumed = runner.invoke(app, [*two, "--resume", "--json"])  # continues from last.prev.pt (after epoch 1)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["epochs"] == 2
    assert read_checkpoint(last)["train_state"]["epoch"] == 2


def test_scrambled_cache_is_named_and_extract_verify_repairs_it(video_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c.h5"
    base = ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache", str(cache), "--workers", "0"]
    assert runner.invoke(app, [*base, "--json"]).exit_code == 0
    good = FeatureCache(cache).entry_inputs(["video0", "video1", "video2", "video3"])[0]
    reader = FeatureCache(cache)
    segment, row = reader._video("video2")
    reader.close()
    # overwrite the stored bytes of the chunk that holds video2's last frame
    with h5py.File(segment.path, "r", locking=False) as f:
        first, count = int(f["videos/offsets"][row]), int(f["videos/counts"][row])
        chunk = (first + count - 1) // CHUNK_ROWS
        info = f["frames/features"].id.get_chunk_info(chunk)
        offsets, counts, ids = f["videos/offsets"][:], f["videos/counts"][:], list(f["videos/ids"].asstr()[:])
    in_chunk = {v for v, o, n in zip(ids, offsets, counts, strict=True)
                if o < (chunk + 1) * CHUNK_ROWS and o + n > chunk * CHUNK_ROWS}  # fmt: skip
    raw = bytearray(segment.path.read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, 190, dtype=np.uint8).tobytes()
    raw[info.byte_offset + 10 : info.byte_offset + 200] = noise
    segment.path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="video2"):
        FeatureCache(cache).entry_inputs(["video0", "video1", "video2", "video3"])[0]
    assert "video2" in in_chunk and set(FeatureCache(cache).verify()) == in_chunk  # the videos of that chunk only
    plain = json.loads(runner.invoke(app, [*base, "--json"]).stdout)  # without --verify: unchanged files skipped
    assert plain["extracted"] == []
    repaired = runner.invoke(app, [*base, "--verify", "--json"])
    assert repaired.exit_code == 0, repaired.output
    assert set(json.loads(repaired.stdout)["extracted"]) == in_chunk
    again = FeatureCache(cache).entry_inputs(["video0", "video1", "video2", "video3"])[0]
    np.testing.assert_array_equal(again, good)


# ---- 5. one-line errors instead of tracebacks --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "is empty"), ("video_id,sentence\nvideo90,un caf\xe9\n".encode("latin-1"), "not UTF-8")],
)
def test_broken_msrvtt_test_file(run: Path, sample_cache: Path, tmp_path: Path, content: bytes, expected: str) -> None:
    root = tmp_path / "msrvtt"
    shutil.copytree(SAMPLE_MSRVTT, root, ignore=shutil.ignore_patterns("videos"))
    (root / "MSRVTT_JSFUSION_test.csv").write_bytes(content)
    args = ["evaluate", "--checkpoint", str(run), "--dataset", "msrvtt", "--data-root", str(root),
            "--cache", str(sample_cache)]  # fmt: skip
    message = one_line_error(runner.invoke(app, args))
    assert expected in message and "MSRVTT_JSFUSION_test.csv" in message


def test_duplicate_rows_in_msrvtt_test_file_are_scored_once_per_video(
    run: Path, sample_cache: Path, tmp_path: Path
) -> None:
    root = tmp_path / "msrvtt"
    shutil.copytree(SAMPLE_MSRVTT, root, ignore=shutil.ignore_patterns("videos"))
    test_csv = root / "MSRVTT_JSFUSION_test.csv"
    lines = test_csv.read_text().splitlines()
    test_csv.write_text("\n".join([*lines, lines[1], lines[2]]) + "\n")  # two rows repeated
    args = ["evaluate", "--checkpoint", str(run), "--dataset", "msrvtt", "--data-root", str(root),
            "--cache", str(sample_cache), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["num_videos"] == 30 and metrics["num_queries"] == 32


@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A small file system of our own at `mount` (needs root, as CI has; the test is skipped elsewhere)."""
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 160 KB disk that fills up."""
    with tmpfs(tmp_path / "disk", "size=160k") as mount:
        yield mount


@pytest.mark.slow
def test_disk_full_while_extracting_keeps_finished_videos(video_dir: Path, small_disk: Path, tmp_path: Path) -> None:
    """A real process on a real full disk: one line, exit code 1 (a failed write inside HDF5 used to crash the
    process at exit, code 139), and every segment written before the disk filled up is still read."""
    for n in range(4, 12):  # 12 videos with stored frames (about 25 KB each) do not fit in 160 KB
        shutil.copy(SAMPLE_MSRVTT / "videos" / f"video{n}.mp4", video_dir / f"video{n}.mp4")
    cache = small_disk / "c.h5"
    cmd = [sys.executable, "-m", "tcmgc_cli", "extract", "--videos", str(video_dir), "--model", "tcmgc-tiny",
           "--cache", str(cache), "--workers", "0", "--store-frames", "--batch-size", "1"]  # fmt: skip
    env = {**os.environ, "TCMGC_WORKSPACE": str(tmp_path / "ws"), "COLUMNS": "400"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "finished work is kept" in lines[0]
    assert "Traceback" not in proc.stderr
    assert len(FeatureCache(cache)) >= 1  # the segments written before the disk filled up are all there


def test_read_only_cache_and_output_are_one_line_errors(
    video_dir: Path, data: Path, sample_cache: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64k") as mount:
        args = ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache", str(mount / "c.h5")]
        assert "Read-only file system" in one_line_error(runner.invoke(app, [*args, "--workers", "0"]))
        message = one_line_error(runner.invoke(app, train_args(data, sample_cache, mount / "run")))
        assert "Read-only file system" in message and "--output" in message


# ---- 6. decoder processes die with their parent ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_kill_9_of_extract_takes_its_decoders_with_it(tmp_path: Path) -> None:
    env = {**os.environ, "TCMGC_WORKSPACE": str(tmp_path / "ws")}
    cmd = [sys.executable, "-m", "tcmgc_cli", "extract", "--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT),
           "--model", "tcmgc-tiny", "--workers", "2", "--batch-size", "1", "--cache", str(tmp_path / "c.h5")]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert len(workers) >= 2, "extract never started its decoder processes"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() and "Z" not in _state(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# ---- 7. the smaller ones -----------------------------------------------------------------------------------------
def test_text_file_as_checkpoint_says_what_it_is(tmp_path: Path) -> None:
    from tcmgc_cli.checkpoint import read_checkpoint

    notes = tmp_path / "notes.pt"
    notes.write_text("epoch 3 was the best one\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as err:
        read_checkpoint(notes)
    assert "(101)" not in str(err.value)


def test_foreign_checkpoint_points_to_something_that_exists(tmp_path: Path) -> None:
    from tcmgc_cli.checkpoint import read_checkpoint

    foreign = tmp_path / "pytorch_model.bin.pt"
    torch.save({"state_dict": {"clip.logit_scale": torch.ones(())}}, foreign)
    with pytest.raises(CheckpointError, match="tcmgc import-reference") as err:
        read_checkpoint(foreign)
    assert "--reference" not in str(err.value)


def test_empty_video_reason_once_and_no_pyav_hint_after_pyav_failed(tmp_path: Path) -> None:
    from tcmgc_cli.data.video import read_video
    from tcmgc_cli.errors import VideoDecodeError

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError) as err:
        read_video(empty, lambda n, fps: [0])
    assert str(err.value).count("empty file") == 1
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoDecodeError) as err:
        read_video(junk, lambda n, fps: [0])
    assert "pyav" in str(err.value) and "--backend pyav" not in str(err.value)


def test_json_extract_warning_does_not_point_to_missing_text(video_dir: Path, tmp_path: Path) -> None:
    (video_dir / "broken.mp4").write_bytes(b"junk" * 100)
    result = runner.invoke(app, ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache",
                                 str(tmp_path / "c.h5"), "--workers", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0
    assert "reasons above" not in result.output and '"failed" in the JSON output' in result.output


def test_train_help_shows_the_toml_tables() -> None:
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "[model]" in result.output and "[train]" in result.output


def test_long_query_note_is_short(run: Path, sample_cache: Path) -> None:
    query = "a red circle moves left " * 20
    result = runner.invoke(app, ["search", query, "--checkpoint", str(run), "--cache", str(sample_cache), "--json"])
    assert result.exit_code == 0, result.output
    note = [line for line in result.output.splitlines() if line.startswith("Note")]
    assert note and "a red circle moves left a red circle ..." in note[0] and len(note[0]) < 150


def test_saved_search_indexes_do_not_pile_up(sample_cache: Path, tmp_path: Path, run: Path) -> None:
    from tcmgc_cli.checkpoint import RunFolder, load_trained
    from tcmgc_cli.search import open_index
    from tcmgc_cli.search.store import KEEP_INDEXES

    cache = tmp_path / "c.h5"
    copy_cache(sample_cache, cache)
    for n in range(KEEP_INDEXES + 2):  # one checkpoint file per "run": each gets its own index
        copy = tmp_path / f"ck{n}.pt"
        shutil.copy(RunFolder(run).best, copy)
        open_index(load_trained(copy, "cpu"), copy, FeatureCache(cache))
        time.sleep(0.01)
    assert len(list((tmp_path / "c.h5.d").glob("index-*"))) == KEEP_INDEXES


def test_search_on_a_read_only_cache_folder_saves_its_index_in_the_workspace(
    sample_cache: Path, tmp_path: Path, run: Path
) -> None:
    from tcmgc_cli.checkpoint import find_checkpoint, load_trained
    from tcmgc_cli.search import open_index, ranker_key
    from tcmgc_cli.search.rankers import TcmgcRanker
    from tcmgc_cli.workspace import index_folders

    mount = tmp_path / "ro"
    mount.mkdir()
    (tmp_path / "src").mkdir()
    copy_cache(sample_cache, tmp_path / "src" / "c.h5")
    if subprocess.run(
        ["mount", "--bind", "-o", "ro", str(tmp_path / "src"), str(mount)], capture_output=True
    ).returncode:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        cache = FeatureCache(mount / "c.h5")
        trained = load_trained(run, "cpu")
        index = open_index(trained, run, cache)
        beside, workspace = index_folders(cache.path, ranker_key(TcmgcRanker(trained), find_checkpoint(run)))
        assert not beside.exists() and list(workspace.glob("part-*/meta.json")) and len(index) == len(cache)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_pickled_objects_are_refused_without_torchs_unsafe_advice(tmp_path: Path) -> None:
    import argparse

    from tcmgc_cli.checkpoint import read_checkpoint

    path = tmp_path / "reference.pth"
    torch.save({"args": argparse.Namespace(lr=1e-4), "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="argparse.Namespace") as err:
        read_checkpoint(path)
    assert "weights_only" not in str(err.value) and "\x1b" not in str(err.value)  # torch's advice and its colours


def test_merge_refuses_before_writing_when_the_disk_cannot_hold_it(
    monkeypatch: pytest.MonkeyPatch, video_dir: Path, tmp_path: Path
) -> None:
    """A large merge writes a segment as large as its sources: checked first, and the segments stay readable."""
    import collections

    from tcmgc_cli.cache import writer as cache_module

    monkeypatch.setattr(cache_module, "FANOUT", 4)  # the 4 videos' segments merge at the end of the run
    monkeypatch.setattr(cache_module, "IN_MEMORY_BYTES", 0)  # as a large merge: written straight to disk
    path = tmp_path / "c.h5"
    base = ["extract", "--videos", str(video_dir), "--model", "tcmgc-tiny", "--cache", str(path), "--workers", "0"]
    real = cache_module.shutil.disk_usage
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda p: usage(10**9, 10**9, 1024))
    message = one_line_error(runner.invoke(app, [*base, "--batch-size", "1"]))
    assert "not enough free space to merge" in message
    assert len(list((tmp_path / "c.h5.d").glob("seg-*.h5"))) == 4 and len(FeatureCache(path)) == 4
    monkeypatch.setattr(cache_module.shutil, "disk_usage", real)
    assert runner.invoke(app, [*base, "--json"]).exit_code == 0  # room again: the rerun merges
    assert len(list((tmp_path / "c.h5.d").glob("seg-*.h5"))) == 1 and len(FeatureCache(path)) == 4
