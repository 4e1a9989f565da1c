"""Every command as one library call (README "From Python"), on real decoded sample video."""

import json
from pathlib import Path

import pytest

from tcmgc_cli.data.source import DataSource
from tests.helpers import small_dataset


def test_extract_train_evaluate_search_from_python(video_dir: Path, sample_cache: Path, tmp_path: Path) -> None:
    from tcmgc_cli.evaluation.retrieval import evaluate
    from tcmgc_cli.extract import extract_folder
    from tcmgc_cli.search import open_search
    from tcmgc_cli.training import train

    report = extract_folder(video_dir, "tcmgc-tiny", cache=tmp_path / "c.h5", workers=0)
    assert sorted(report.extracted) == ["video0", "video1", "video2", "video3"] and report.cache == str(
        tmp_path / "c.h5"
    )
    data = DataSource("csv", annotations=small_dataset(tmp_path))
    result = train(data, "tcmgc-tiny", output=tmp_path / "run", cache=sample_cache, epochs=1, batch_size=16)
    assert result.state.epoch == 1 and (result.run / "checkpoints" / "best.pt").is_file()
    assert json.loads((result.run / "config.json").read_text())["dataset"] == "csv"
    metrics = evaluate(data, result.run, cache=sample_cache)
    assert metrics["num_queries"] == 40 and metrics["num_videos"] == 4 and 0 <= metrics["t2v_R@1"] <= 100
    hits, notes = open_search(result.run, sample_cache).search(["a red circle moves left"], top_k=3)
    assert len(hits[0]) == 3 and not notes


def test_library_errors_are_the_commands_errors(tmp_path: Path) -> None:
    from tcmgc_cli.errors import CacheError, ConfigError
    from tcmgc_cli.training import train

    data = DataSource("csv", annotations=small_dataset(tmp_path))
    with pytest.raises(ConfigError, match="not both"):
        train(data, "tcmgc-tiny", resume=True, overwrite=True)
    with pytest.raises(CacheError, match="run `tcmgc extract` first"):
        train(data, "tcmgc-tiny", cache=tmp_path / "missing.h5")


def _same_cache(a: Path, b: Path) -> None:
    import numpy as np

    from tcmgc_cli.cache import FeatureCache

    one, two = FeatureCache(a), FeatureCache(b)
    assert one.settings == two.settings and one.ids() == two.ids()
    for video in one.videos():
        for x, y in zip(one.track(video), two.track(video), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_the_library_and_the_command_build_the_same_cache(video_dir: Path, tmp_path: Path) -> None:
    """Defaults live in the library: the same arguments give the same cache from Python and from the command line."""
    from typer.testing import CliRunner

    from tcmgc_cli import extract_dataset, extract_folder
    from tcmgc_cli.cli import app
    from tests.helpers import SAMPLE_MSRVTT

    runner = CliRunner()
    base = ["extract", "--model", "tcmgc-tiny", "--workers", "0"]
    assert runner.invoke(app, [*base, "--videos", str(video_dir), "--cache", str(tmp_path / "cli.h5")]).exit_code == 0
    extract_folder(video_dir, "tcmgc-tiny", cache=tmp_path / "py.h5", workers=0)
    _same_cache(tmp_path / "cli.h5", tmp_path / "py.h5")
    listing = tmp_path / "ids.csv"
    listing.write_text("video_id\nvideo3\nvideo100\n")
    dataset = [*base, "--dataset", "msrvtt", "--data-root", str(SAMPLE_MSRVTT), "--annotations", str(listing)]
    assert runner.invoke(app, [*dataset, "--cache", str(tmp_path / "cli-d.h5")]).exit_code == 0
    extract_dataset("msrvtt", SAMPLE_MSRVTT, "tcmgc-tiny", annotations=listing, cache=tmp_path / "py-d.h5", workers=0)
    _same_cache(tmp_path / "cli-d.h5", tmp_path / "py-d.h5")


def test_the_main_calls_import_from_the_package_whatever_loads_first() -> None:
    """`train`, `evaluate` and `ablate` are also module names: loading those modules, before or after, must not
    replace the calls imported from the package (a fresh interpreter, so that nothing is loaded yet)."""
    import subprocess
    import sys

    code = (
        "import tcmgc_cli.evaluate\n"
        "from tcmgc_cli import ablate, evaluate, extract_folder, open_search, train\n"
        "import tcmgc_cli.ablate, tcmgc_cli.train\n"
        "import tcmgc_cli\n"
        "assert all(callable(f) and not hasattr(f, '__path__') for f in (ablate, evaluate, train))\n"
        "assert tcmgc_cli.train is train and tcmgc_cli.ablate is ablate and tcmgc_cli.evaluate is evaluate\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
