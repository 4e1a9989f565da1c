import os
import random
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import QUICK, SAMPLE_MSRVTT, small_dataset

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["TCMGC_PRECISION"] = "fp32"  # `auto` measures the host: tests compare exact features, so pin it


@pytest.fixture(autouse=True)
def _offline_seeded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TCMGC_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # precision records stay in the test
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def video_dir(tmp_path: Path) -> Path:
    """Four short real videos copied from sample_data."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for n in range(4):
        (folder / f"video{n}.mp4").write_bytes((SAMPLE_MSRVTT / "videos" / f"video{n}.mp4").read_bytes())
    return folder


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample dataset extracted once with the tiny model."""
    from typer.testing import CliRunner

    from tcmgc_cli.cli import app

    path = tmp_path_factory.mktemp("cache") / "tcmgc-tiny.h5"
    result = CliRunner().invoke(
        app, ["extract", "--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), "--model", "tcmgc-tiny",
              "--cache", str(path), "--workers", "0", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A csv dataset over 16 of the sample videos: 12 train, 4 test."""
    return small_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def trained_run(sample_cache: Path, small_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run of tcmgc-tiny trained one epoch on `small_csv` over `sample_cache`, through the CLI, and its dataset:
    for every test that needs a trained model, not a training of its own. Tests must not change it."""
    import json

    from typer.testing import CliRunner

    from tcmgc_cli.cli import app

    run = tmp_path_factory.mktemp("run") / "run"
    result = CliRunner().invoke(app, ["train", "--dataset", "csv", "--annotations", str(small_csv), "--model",
                                      "tcmgc-tiny", "--cache", str(sample_cache), "--output", str(run), "--json", *QUICK])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and Path(summary["run"]) == run
    return run, small_csv
