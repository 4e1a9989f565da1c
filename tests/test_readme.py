"""The README's commands run as written: the quickstart's tcmgc commands and the "From Python" block."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def readme_block(heading: str, lang: str) -> str:
    """The first ```lang block after `heading` in README.md."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"\n{heading}\n") :]
    found = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert found, f"no {lang} block under {heading}"
    return found.group(1)


def _run_here(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run in a fresh folder that has the repository's sample_data, with the default workspace (./tcmgc-workspace)."""
    if not (tmp_path / "sample_data").exists():
        (tmp_path / "sample_data").symlink_to(ROOT / "sample_data")
    env = {k: v for k, v in os.environ.items() if k != "TCMGC_WORKSPACE"} | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_quickstart_runs_as_written(tmp_path: Path) -> None:
    commands = [c.strip() for c in readme_block("## Quickstart", "bash").split("&&") if c.strip().startswith("tcmgc ")]
    assert [c.split()[1] for c in commands] == ["extract", "train", "evaluate"]
    for command in commands:  # the setup before them (venv, pip install) is what CI itself runs
        done = _run_here(tmp_path, [sys.executable, "-m", "tcmgc_cli", *shlex.split(command)[1:]])
        assert done.returncode == 0, done.stderr[-3000:]
    assert "R@1" in done.stdout and "30 videos" in done.stdout + done.stderr


@pytest.mark.slow
def test_the_from_python_block_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(readme_block("## From Python", "python"))
    done = _run_here(tmp_path, [sys.executable, "example.py"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "tcmgc-workspace" / "cache" / "tcmgc-tiny.h5").is_file()
