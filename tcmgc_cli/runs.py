"""Training runs as library calls: resolve the settings, open the cache and the splits, train into a run folder.

    from tcmgc_cli.data.source import DataSource
    from tcmgc_cli.runs import train

    result = train(DataSource("msrvtt", Path("MSRVTT")), "tcmgc-b32", epochs=5)
    result.run, result.state.best

`tcmgc train` is this call plus option parsing and a live view; `tcmgc ablate` calls `prepare` once and
`train_run` per variant.
"""

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.config import TrainConfig, apply_overrides
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.distributed import process_rank, world_size
from tcmgc_cli.errors import ConfigError, RunExistsError
from tcmgc_cli.fileio import FolderLock, write_text_atomic
from tcmgc_cli.model.encoder import Tokenizer, resolve_device
from tcmgc_cli.model.factory import ModelSpec, create_model, resolve_spec
from tcmgc_cli.model.registry import get_model_config
from tcmgc_cli.scoring import check_cache
from tcmgc_cli.train import TrainData, Trainer, TrainState, seed_everything
from tcmgc_cli.workspace import default_cache_path, latest_run, new_run_dir

log = logging.getLogger(__name__)
Event = dict[str, Any]


@dataclass
class TrainSetup:
    """Everything a training run needs besides the model's head config and seed."""

    model_name: str
    pretrained: str | None
    overrides: dict[str, Any]  # ModelConfig keys from --config / --set
    cfg: TrainConfig
    cache: FeatureCache
    train_split: Split
    val_split: Split | None
    device: torch.device
    dataset: str

    def spec(self, extra: dict[str, Any] | None = None) -> ModelSpec:
        return resolve_spec(self.model_name, self.pretrained, {**self.overrides, **(extra or {})})


@dataclass
class TrainResult:
    run: Path
    state: TrainState

    def to_dict(self) -> dict[str, Any]:
        last = self.state.history[-1] if self.state.history else {}
        return {"run": str(self.run), "epochs": self.state.epoch, "steps": self.state.step,
                "best_epoch": self.state.best_epoch, "best_t2v_R@1": self.state.best, "last": last}  # fmt: skip


def prepare(
    source: DataSource, model: str = "tcmgc-b32", *, pretrained: str | None = None, cache: Path | None = None,
    config: Path | None = None, sets: Sequence[str] = (), train: dict[str, Any] | None = None, device: str = "auto",
) -> TrainSetup:  # fmt: skip
    """Resolve settings (recipe -> model config -> `config` TOML -> `sets` -> `train` keys), open the cache
    (default: the workspace's for `model`) and check it, load the training and validation splits."""
    entry = get_model_config(model)
    overrides, cfg = apply_overrides({}, entry.get("train", {}), config, list(sets))
    cfg = dataclasses.replace(cfg, **(train or {}))
    features = FeatureCache(cache or default_cache_path(model))
    check_cache(features, resolve_spec(model, pretrained, overrides), needs_frames=cfg.freeze == "none")
    train_split = source.split("train", features)
    return TrainSetup(model, pretrained, overrides, cfg, features, train_split, source.validation_split(features),
                      resolve_device(device), source.dataset)  # fmt: skip


def train_run(
    setup: TrainSetup, spec: ModelSpec, cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
    overwrite: bool = False, on_event: Callable[[Event], None] | None = None, announce: bool = True,
) -> TrainState:  # fmt: skip
    """Train one model into `run_dir` (continuing its last checkpoint with `resume`), holding the folder's lock.
    announce: log whether a run was resumed or started fresh."""
    rank = process_rank()
    lock = claim_run(run_dir, resume, overwrite) if rank == 0 else None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        model = create_model(spec).to(setup.device)
        tokenizer = Tokenizer(spec.clip, spec.config.max_words)
        data = TrainData.build(setup.train_split, setup.cache, tokenizer, cfg.freeze == "none")
        trainer = Trainer(model, spec, cfg, data, run_dir, setup.device, setup.cache, on_event)
        resumed = resume and trainer.resume()
        if resume and announce:
            log.info(f"Resuming {run_dir} after epoch {trainer.state.epoch}." if resumed
                     else f"Nothing to resume in {run_dir}: starting from the beginning.")  # fmt: skip
        if rank == 0:
            config = {"spec": spec.to_dict(), "train": dataclasses.asdict(cfg), "dataset": setup.dataset,
                      "cache": str(setup.cache.path), "inputs": setup.cache.settings.track}  # fmt: skip
            write_text_atomic(run_dir / "config.json", json.dumps(config, indent=1))
        return trainer.fit(setup.val_split)
    finally:
        if lock is not None:
            lock.close()


def train(
    source: DataSource, model: str = "tcmgc-b32", *, output: Path | None = None, resume: bool = False,
    overwrite: bool = False, pretrained: str | None = None, cache: Path | None = None, config: Path | None = None,
    sets: Sequence[str] = (), epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
    seed: int | None = None, freeze_backbone: bool = False, device: str = "auto",
    on_event: Callable[[Event], None] | None = None, precision: str | None = None,
) -> TrainResult:  # fmt: skip
    """Train TC-MGC on `source` into `output` (default: a new run folder in the workspace; with `resume`, the
    newest run). Settings merge: recipe -> model config -> `config` -> `sets` -> the keyword arguments."""
    if resume and overwrite:
        raise ConfigError("pass --resume (continue the run) or --overwrite (start it again), not both.")
    if world_size() > 1 and output is None:
        raise ConfigError("under torchrun pass --output DIR, so that every process writes to the same run folder.")
    flags = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "precision": precision}
    keys = {k: v for k, v in flags.items() if v is not None} | ({"freeze": "all"} if freeze_backbone else {})
    setup = prepare(source, model, pretrained=pretrained, cache=cache, config=config, sets=sets, train=keys,
                    device=device)  # fmt: skip
    run_dir = output or ((latest_run() if resume else None) or new_run_dir(model))
    state = train_run(setup, setup.spec(), setup.cfg, run_dir, resume=resume, overwrite=overwrite, on_event=on_event)
    return TrainResult(run_dir, state)


def holds_run(run_dir: Path) -> bool:
    """Whether a folder already holds (part of) a training run."""
    return (run_dir / "metrics.jsonl").exists() or any((run_dir / "checkpoints").glob("*.pt"))


def claim_run(run_dir: Path, resume: bool, overwrite: bool = False) -> FolderLock:
    """Lock `run_dir` for this process (held until closed; the kernel drops it if the process dies).

    A folder that holds a run is continued only with `resume`, and started over only with `overwrite`, which
    deletes its checkpoints and logs; otherwise RunExistsError, and nothing in it changes.
    """
    lock = FolderLock(
        run_dir, f"{run_dir} is being written by another tcmgc process: wait for it, or pass another --output."
    )
    if not resume and holds_run(run_dir):
        if not overwrite:
            lock.close()
            raise RunExistsError(
                f"{run_dir} already holds a training run: continue it with --resume, start it again with --overwrite "
                "(deletes its checkpoints and metrics), or pass another --output."
            )
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        for name in ("metrics.jsonl", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
    return lock
