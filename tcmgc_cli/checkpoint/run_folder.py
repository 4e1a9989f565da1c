"""A training run's folder: its layout, and what its checkpoints hold, for training, resume and import.

    <run>/config.json                  the resolved spec, recipe, dataset, cache and inputs
    <run>/metrics.jsonl                one line per logged step and per epoch
    <run>/checkpoints/last.pt          after every epoch, with the optimizer and random state to resume from
    <run>/checkpoints/last.prev.pt     the one before (resume falls back to it when last.pt is damaged)
    <run>/checkpoints/best.pt          the epoch with the best validation t2v R@1

A checkpoint's payload: the weights and spec (`files.py`), "data" (the cache encoder the run reads and whether its
image tower trains), "train" (the recipe), "train_state" (epochs, steps, best), and "resume" in last.pt.
"""

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli.checkpoint.files import read_checkpoint, save_checkpoint
from tcmgc_cli.config import TrainConfig
from tcmgc_cli.errors import CheckpointError, RunExistsError
from tcmgc_cli.fileio import FolderLock, write_text_atomic
from tcmgc_cli.model.factory import ModelSpec
from tcmgc_cli.workspace import runs_dir

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: float = -1.0  # best validation t2v R@1
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Provenance:
    """What a run's checkpoints say about the features they read."""

    encoder_fingerprint: str  # the image tower whose cached features the run reads
    visual_trained: bool  # the image tower trains (or was fine-tuned): cached frames are encoded again
    imported_from: str | None = None  # the reference checkpoint it came from (`tcmgc import-reference`)


class RunFolder:
    """The files of one run (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.best, self.last, self.previous = (self.checkpoints / n for n in ("best.pt", "last.pt", "last.prev.pt"))
        self.config_file, self.metrics_file = self.path / "config.json", self.path / "metrics.jsonl"

    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a training run."""
        return self.metrics_file.exists() or any(self.checkpoints.glob("*.pt"))

    def checkpoint(self) -> Path:
        """The checkpoint that stands for the run: best.pt, else last.pt."""
        for candidate in (self.best, self.last):
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"no checkpoint in {self.path}: expected checkpoints/best.pt or last.pt (train with `tcmgc train`)."
        )

    def claim(self, resume: bool, overwrite: bool = False) -> FolderLock:
        """Lock the folder for this process (held until closed; the kernel drops it if the process dies).

        A folder that holds a run is continued only with `resume`, and started over only with `overwrite`, which
        deletes its checkpoints and logs; otherwise RunExistsError, and nothing in it changes.
        """
        lock = FolderLock(
            self.path, f"{self.path} is being written by another tcmgc process: wait for it, or pass another --output."
        )
        if not resume and self.holds_run():
            if not overwrite:
                lock.close()
                raise RunExistsError(
                    f"{self.path} already holds a training run: continue it with --resume, start it again with "
                    "--overwrite (deletes its checkpoints and metrics), or pass another --output."
                )
            shutil.rmtree(self.checkpoints, ignore_errors=True)
            self.metrics_file.unlink(missing_ok=True)
            self.config_file.unlink(missing_ok=True)
        return lock

    def write_config(self, config: dict[str, Any]) -> None:
        write_text_atomic(self.config_file, json.dumps(config, indent=1))

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_file, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch records of metrics.jsonl (validation metrics, score variance, seconds)."""
        if not self.metrics_file.is_file():
            return []
        records = [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("kind") == "epoch"]

    def save(
        self, model: torch.nn.Module, spec: ModelSpec, cfg: TrainConfig, state: TrainState, provenance: Provenance,
        resume: dict[str, Any], improved: bool,
    ) -> None:  # fmt: skip
        """An epoch's checkpoints: last.pt (the one before kept as last.prev.pt) with `resume` (optimizer and random
        state), and best.pt when `improved`; each written atomically."""
        data = {"encoder_fingerprint": provenance.encoder_fingerprint, "visual_trained": provenance.visual_trained}
        payload: dict[str, Any] = {"data": data, "train": asdict(cfg), "train_state": asdict(state)}
        if provenance.imported_from is not None:
            payload["imported_from"] = provenance.imported_from
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        if self.last.exists():
            os.replace(self.last, self.previous)
        save_checkpoint(self.last, model, spec, {**payload, "resume": resume})
        if improved:
            save_checkpoint(self.best, model, spec, payload)

    def resume_payload(self) -> dict[str, Any] | None:
        """The payload to continue from: last.pt, or last.prev.pt when that one is damaged; None when there is none."""
        for path in (self.last, self.previous):
            if not path.exists():
                continue
            try:
                payload = read_checkpoint(path)
            except CheckpointError as err:
                log.warning("%s; trying the previous one", err)
                continue
            payload["path"] = str(path)
            return payload
        return None


def find_checkpoint(path: Path) -> Path:
    """A run folder -> its best checkpoint (else last); a file is returned as is."""
    return path if path.is_file() else RunFolder(path).checkpoint()


def latest_run() -> Path | None:
    """The newest run folder of the workspace that holds a checkpoint, or None."""
    root = runs_dir()
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if any(RunFolder(p).checkpoints.glob("*.pt"))]
    return max(runs, key=lambda p: (p.stat().st_mtime, p.name)) if runs else None
