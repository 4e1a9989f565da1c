"""Every command as one library call (README "From Python"), on real decoded sample video."""

import json
from pathlib import Path

import pytest

from tcmgc_cli.data.source import DataSource
from tests.test_cli_train_evaluate import small_dataset


def test_extract_train_evaluate_search_from_python(video_dir: Path, sample_cache: Path, tmp_path: Path) -> None:
    from tcmgc_cli.evaluate import evaluate
    from tcmgc_cli.extract import extract_folder
    from tcmgc_cli.runs import train
    from tcmgc_cli.search import open_search

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
    from tcmgc_cli.runs import train

    data = DataSource("csv", annotations=small_dataset(tmp_path))
    with pytest.raises(ConfigError, match="not both"):
        train(data, "tcmgc-tiny", resume=True, overwrite=True)
    with pytest.raises(CacheError, match="run `tcmgc extract` first"):
        train(data, "tcmgc-tiny", cache=tmp_path / "missing.h5")
