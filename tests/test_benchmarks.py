"""The benchmarks' measuring code still runs against the library (at toy sizes; the figures come from the scripts)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_search_benchmark_builds_and_measures_an_index() -> None:
    import search as bench  # benchmarks/search.py

    from tcmgc_cli.config import ModelConfig
    from tcmgc_cli.model.tcmgc import TcmgcModel

    model = TcmgcModel(ModelConfig(embed_dim=bench.D, max_words=bench.L, num_frames=bench.T), bench.LogitScaleOnly())
    index = bench.make_index(model.eval(), 120)
    agree = bench.agreement(index, bench.make_queries(index, 4), [20, 120])
    assert agree["120"]["identical"] == 100.0  # every candidate re-scored: the exhaustive top-10
    assert bench.latency(index, bench.make_queries(index, 2), 20) > 0
    assert bench.keep_lva(index, bench.make_queries(index, 2), 20) and index.lva is not None
    assert bench.together_vs_alone(index, bench.make_queries(index, 3), rounds=1)["queries"] == 3


@pytest.mark.slow
def test_extract_benchmark_measures_on_sample_video() -> None:
    import extract as bench  # benchmarks/extract.py

    torch.set_num_threads(1)
    stats = bench.measure("tcmgc-tiny", "tcmgc-clip-tiny", 4, 8, 0, 4)
    assert stats["videos"] == 4 and stats["extract_s"] > 0


@pytest.mark.slow
def test_train_speed_benchmark_trains_the_quickstart(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import train_speed as bench  # benchmarks/train_speed.py

    monkeypatch.setattr(sys, "argv", ["train_speed.py", "--epochs", "2"])
    monkeypatch.setenv("TCMGC_PRECISION", "fp32")
    monkeypatch.setenv("TCMGC_WORKSPACE", "unused")  # main() sets its own: restored after the test
    bench.main()
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["benchmark"] == "train_speed" and summary["on"]["epochs"] == 2
