"""The paper's three datasets end to end through the CLI, each in its own reference layout (sample_data/msrvtt,
didemo, vatex: real decoded video): extract -> train one epoch -> evaluate."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.cli import app
from tests.helpers import ROOT

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "frames", "queries", "videos"),
    [
        ("didemo", 16, 6, 6),  # DiDeMo: 64 frames and words in the reference recipe, tiny holds 16; paragraphs
        ("vatex", 8, 60, 6),  # VATEX: MSR-VTT's inputs; every caption of a test video is a query
    ],
)
def test_extract_train_evaluate_on_each_layout(
    dataset: str, frames: int, queries: int, videos: int, tmp_path: Path
) -> None:
    root, cache, run = ROOT / "sample_data" / dataset, tmp_path / "c.h5", tmp_path / "run"
    base = ["--dataset", dataset, "--data-root", str(root), "--cache", str(cache)]
    extracted = runner.invoke(app, ["extract", *base, "--model", "tcmgc-tiny", "--workers", "0", "--json"])
    assert extracted.exit_code == 0, extracted.output
    report = json.loads(extracted.stdout)
    assert len(report["extracted"]) == 36 and not report["failed"]
    settings = FeatureCache(cache).settings
    assert settings.num_frames == frames and settings.tracks.window == 0  # one entry per video, the dataset's T
    trained = runner.invoke(app, ["train", *base, "--model", "tcmgc-tiny", "--epochs", "1", "--output", str(run),
                                  "--json"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["evaluate", *base, "--checkpoint", str(run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert (metrics["num_queries"], metrics["num_videos"]) == (queries, videos) and metrics["precision"] == "fp32"
    assert 0 <= metrics["t2v_R@1"] <= 100


def test_didemo_names_its_files_exactly(tmp_path: Path) -> None:
    """DiDeMo's names carry their extension, or a bare '.': each is found as named, and a missing one is a
    failure that names it, not a silent skip."""
    from tcmgc_cli.data.annotations import dataset_videos
    from tcmgc_cli.extract import plan_jobs

    found = dataset_videos("didemo", ROOT / "sample_data" / "didemo")
    bare = [n for n in found.files.values() if n.endswith(".")]
    assert bare and len(found.ids) == 36 and {Path(n).suffix for n in found.files.values()} >= {".mov", ".avi"}
    jobs, failed, _ = plan_jobs(found.folder, found.ids, found.files)
    assert len(jobs) == 36 and not failed
    assert {j.path.name for j in jobs} == set(found.files.values())
    jobs, failed, _ = plan_jobs(found.folder, ["gone"], {"gone": "gone.mov"})
    assert not jobs and "no video file named gone.mov" in failed[0].reason
