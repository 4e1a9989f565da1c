"""extract -> train -> evaluate through the CLI on real decoded sample video, and the bad inputs of each."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tcmgc_cli.cli import app
from tcmgc_cli.metrics import METRIC_KEYS
from tests.helpers import QUICK, SAMPLE_MSRVTT, copy_cache, one_line_error

runner = CliRunner()
KEYS = list(METRIC_KEYS)


def test_train_writes_run_folder(trained_run: tuple[Path, Path]) -> None:
    run, _ = trained_run
    assert (run / "checkpoints" / "best.pt").is_file() and (run / "config.json").is_file()
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and {"loss", "loss_nce", "loss_sdr", "lr"} <= set(steps[0])
    assert records[-1]["kind"] == "epoch" and all(k in records[-1] for k in KEYS)


def test_evaluate_json_and_saved_scores(trained_run: tuple[Path, Path], sample_cache: Path, tmp_path: Path) -> None:
    import numpy as np

    run, data = trained_run
    out = tmp_path / "scores.npz"
    args = [
        "evaluate",
        "--checkpoint",
        str(run),
        "--dataset",
        "csv",
        "--annotations",
        str(data),
        "--cache",
        str(sample_cache),
    ]
    result = runner.invoke(app, [*args, "--json", "--save-scores", str(out), "--chunk", "7"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert all(k in metrics for k in KEYS) and metrics["num_videos"] == 4 and metrics["num_queries"] == 40
    saved = np.load(out)
    assert saved["scores"].shape == (40, 4) and list(saved["video_ids"]) == ["video12", "video13", "video14", "video15"]
    ranks = []  # the independent side: each caption's rank by a loop over the saved scores
    for row, gt in zip(saved["scores"].tolist(), saved["caption_video"].tolist(), strict=True):
        ranks.append(sum(1 for value in row if value > row[gt]))
    assert metrics["t2v_R@1"] == pytest.approx(100 * sum(r == 0 for r in ranks) / len(ranks))
    assert metrics["t2v_R@5"] == pytest.approx(100 * sum(r < 5 for r in ranks) / len(ranks))
    assert metrics["t2v_MnR"] == pytest.approx(1 + sum(ranks) / len(ranks))
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "R@1" in table.stdout and "t2v" in table.stdout


def test_evaluate_finds_the_newest_run_without_flags(
    trained_run: tuple[Path, Path], sample_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, data = trained_run
    workspace = tmp_path / "ws"
    shutil.copytree(run, workspace / "runs" / "20260101-000000-tcmgc-tiny")
    (workspace / "cache").mkdir()
    copy_cache(sample_cache, workspace / "cache" / "tcmgc-tiny.h5")
    monkeypatch.setenv("TCMGC_WORKSPACE", str(workspace))
    result = runner.invoke(app, ["evaluate", "--dataset", "csv", "--annotations", str(data), "--json"])
    assert result.exit_code == 0, result.output
    assert "20260101-000000-tcmgc-tiny" in json.loads(result.stdout)["checkpoint"]


def test_bad_inputs_name_the_fix(trained_run: tuple[Path, Path], sample_cache: Path, tmp_path: Path) -> None:
    run, data = trained_run
    base = ["--dataset", "csv", "--annotations", str(data), "--cache", str(sample_cache)]
    # a corrupt checkpoint
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"\x80\x02garbage")
    assert "not a PyTorch checkpoint" in one_line_error(
        runner.invoke(app, ["evaluate", "--checkpoint", str(broken), *base])
    )
    # a dataset folder missing a file
    empty = tmp_path / "msrvtt"
    empty.mkdir()
    out = one_line_error(
        runner.invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--dataset",
                "msrvtt",
                "--data-root",
                str(empty),
                "--cache",
                str(sample_cache),
            ],
        )
    )
    assert "MSRVTT_JSFUSION_test.csv does not exist" in out
    # ids with no video in the cache, then --skip-missing
    extra = tmp_path / "extra.csv"
    extra.write_text(data.read_text() + "ghost,a ghost moves,test\n")
    args = [
        "evaluate",
        "--checkpoint",
        str(run),
        "--dataset",
        "csv",
        "--annotations",
        str(extra),
        "--cache",
        str(sample_cache),
    ]
    assert "1 of 5 videos have no features" in one_line_error(runner.invoke(app, args))
    assert runner.invoke(app, [*args, "--skip-missing", "--json"]).exit_code == 0
    # a cache from another encoder
    other = tmp_path / "other.h5"
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(SAMPLE_MSRVTT / "videos" / "video12.mp4", videos)
    assert (
        runner.invoke(
            app,
            [
                "extract",
                "--videos",
                str(videos),
                "--model",
                "tcmgc-tiny",
                "--num-frames",
                "4",
                "--cache",
                str(other),
                "--workers",
                "0",
            ],
        ).exit_code
        == 0
    )
    out = one_line_error(
        runner.invoke(
            app,
            [
                "evaluate",
                "--checkpoint",
                str(run),
                "--dataset",
                "csv",
                "--annotations",
                str(data),
                "--cache",
                str(other),
                "--skip-missing",
            ],
        )
    )
    assert "--num-frames 8" in out
    # training on a cache without frames needs --freeze-backbone or frames
    out = one_line_error(
        runner.invoke(
            app,
            [
                "train",
                *base,
                "--model",
                "tcmgc-tiny",
                "--set",
                "train.freeze=none",
                *QUICK,
                "--output",
                str(tmp_path / "r"),
            ],
        )
    )
    assert "--store-frames" in out and "--freeze-backbone" in out
    # an unknown --set key
    out = one_line_error(runner.invoke(app, ["train", *base, "--model", "tcmgc-tiny", "--set", "train.lrr=1"]), code=2)
    assert "valid keys" in out


def test_resume_with_another_config_is_refused(
    trained_run: tuple[Path, Path], sample_cache: Path, tmp_path: Path
) -> None:
    run, data = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = ["train", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(sample_cache),
            "--output", str(copy), "--resume", *QUICK, "--set", "train.lr=0.5"]  # fmt: skip
    assert "another config" in one_line_error(runner.invoke(app, args))


def test_end_to_end_fine_tuning_from_stored_frames(video_dir: Path, tmp_path: Path) -> None:
    """--store-frames keeps the frames; training with the image tower unfrozen reads them, and so does evaluate."""
    import torch

    cache = tmp_path / "frames.h5"
    args = [
        "extract",
        "--videos",
        str(video_dir),
        "--model",
        "tcmgc-tiny",
        "--cache",
        str(cache),
        "--workers",
        "0",
        "--store-frames",
    ]
    assert runner.invoke(app, args).exit_code == 0
    data = tmp_path / "d.csv"
    data.write_text("video_id,caption,split\nvideo0,a red shape,train\nvideo1,a blue shape,train\nvideo2,a green shape,train\n"
                    "video3,a white shape,train\nvideo0,a red shape,test\nvideo1,a blue shape,test\n")  # fmt: skip
    run = tmp_path / "run"
    train = ["train", "--dataset", "csv", "--annotations", str(data), "--model", "tcmgc-tiny", "--cache", str(cache),
             "--output", str(run), "--set", "train.freeze=none", "--set", "train.epochs=3", "--set", "train.batch_size=4"]  # fmt: skip
    result = runner.invoke(app, train)
    assert result.exit_code == 0, result.output
    from tcmgc_cli.checkpoint import read_checkpoint
    from tcmgc_cli.model.factory import create_model, resolve_spec

    payload = read_checkpoint(run / "checkpoints" / "last.pt")
    assert payload["data"]["visual_trained"] is True
    fresh = create_model(resolve_spec("tcmgc-tiny")).state_dict()
    moved = [k for k in fresh if k.startswith("clip.visual.") and not torch.equal(fresh[k], payload["state_dict"][k])]
    assert moved, "the image tower did not train"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(run),
            "--dataset",
            "csv",
            "--annotations",
            str(data),
            "--cache",
            str(cache),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_videos"] == 2
