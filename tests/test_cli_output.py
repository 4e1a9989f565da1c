"""What a person reads: tables whole at 80 columns, help pages without noise, and refusals that come at once (before
any model loads) and name the flag and the value."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tcmgc_cli.cli import app
from tests.helpers import ROOT, one_line_error

runner = CliRunner()
NARROW = {"COLUMNS": "80"}


def test_models_at_80_columns_show_every_preset_whole() -> None:
    result = runner.invoke(app, ["models"], env=NARROW)
    assert result.exit_code == 0
    assert max(len(line) for line in result.output.splitlines()) <= 80
    for name in ("tcmgc-b32", "tcmgc-b16", "tcmgc-tiny"):
        assert name in result.output


def test_search_and_moments_tables_at_80_columns(trained_run: tuple[Path, Path], sample_cache: Path) -> None:
    run, _ = trained_run
    result = runner.invoke(app, ["search", "a red circle moves left", "--checkpoint", str(run), "--cache",
                                 str(sample_cache), "--top-k", "5"], env=NARROW)  # fmt: skip
    assert result.exit_code == 0, result.output
    hits = runner.invoke(app, ["search", "a red circle moves left", "--checkpoint", str(run), "--cache",
                               str(sample_cache), "--top-k", "5", "--json"])  # fmt: skip
    for hit in json.loads(hits.stdout)["results"]:
        assert hit["video_id"] in result.output  # ids whole, never cut to "vide…"
    assert "…" not in result.output
    from rich.console import Console

    from tcmgc_cli.cli.render import models_table, moments_table
    from tcmgc_cli.metrics import MOMENT_KEYS

    console = Console(width=80, record=True)
    console.print(moments_table(dict.fromkeys(MOMENT_KEYS, 12.3), "moments"))
    text = console.export_text()
    headers = {k.removeprefix("corpus_") for k in MOMENT_KEYS}
    assert all(h in text for h in headers) and "…" not in text
    console.print(models_table([{"name": "a-model-name-that-is-long", "pretrained": None, "num_frames": 12,
                                 "max_words": 32, "head_parameters": {"total": 1}}], 80))  # fmt: skip
    assert "a-model-name-that-is-long" in console.export_text()


def test_flags_show_no_value_in_help() -> None:
    for command in ("search", "extract", "evaluate", "train"):
        out = runner.invoke(app, [command, "--help"], env=NARROW).output
        assert "<bool>" not in out and "--json" in out
        assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", ""], "query 1 is empty"),
        (["search", "a dog", "--top-k", "0"], "--top-k must be at least 1 (got 0)"),
        (["train", "--epochs", "-1"], "--epochs (train.epochs) must be at least 1 (got -1)"),
        (["extract", "--videos", ".", "--threads", "0"], "--threads must be at least 1 (got 0)"),
    ],
)
def test_refusals_come_before_any_model_loads(argv: list[str], message: str) -> None:
    """In a fresh interpreter: the refusal is one line, exit 2, and torch was never imported."""
    script = (
        "import sys; from typer.testing import CliRunner; from tcmgc_cli.cli import app; "
        f"r = CliRunner().invoke(app, {argv!r}); print(r.exit_code, 'torch' in sys.modules); print(r.output)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    code, torch_loaded = done.stdout.splitlines()[0].split()
    assert (code, torch_loaded) == ("2", "False"), done.stdout + done.stderr
    assert message in done.stdout and "Error:" in done.stdout and "Traceback" not in done.stdout


def test_a_run_where_every_video_fails_ends_with_an_error_line(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"not a video")
    result = runner.invoke(app, ["extract", "--videos", str(folder), "--model", "tcmgc-tiny", "--cache",
                                 str(tmp_path / "c.h5"), "--workers", "0"])  # fmt: skip
    assert "none of the 1 video(s) could be extracted" in one_line_error(result)
