"""Training runs as library calls: resolve the settings, open the cache and the splits, train into a run folder.

    from tcmgc_cli import DataSource, train

    result = train(DataSource("msrvtt", Path("MSRVTT")), "tcmgc-tiny", epochs=5)
    result.run, result.state.best

`tcmgc train` is this call plus option parsing and a live view; `tcmgc ablate` calls `prepare` once and
`train_run` per variant.
"""

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tcmgc_cli.cache import FeatureCache
from tcmgc_cli.checkpoint import RunFolder, TrainState, check_cache, latest_run
from tcmgc_cli.config import TrainConfig, apply_overrides
from tcmgc_cli.data.annotations import Split
from tcmgc_cli.data.source import DataSource
from tcmgc_cli.defaults import DEVICE, MODEL
from tcmgc_cli.distributed import process_rank, world_size
from tcmgc_cli.errors import ConfigError
from tcmgc_cli.model.encoder import Tokenizer, resolve_device
from tcmgc_cli.model.factory import ModelSpec, create_model, resolve_spec
from tcmgc_cli.model.registry import dataset_inputs, get_model_config
from tcmgc_cli.options import train_keys
from tcmgc_cli.training.trainer import TrainData, Trainer, seed_everything
from tcmgc_cli.workspace import default_cache_path, new_run_dir

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
    source: DataSource, model: str = MODEL, *, pretrained: str | None = None, cache: Path | None = None,
    config: Path | None = None, sets: Sequence[str] = (), train: dict[str, Any] | None = None, device: str = DEVICE,
) -> TrainSetup:  # fmt: skip
    """Resolve settings (recipe -> model config -> the dataset's inputs -> `config` TOML -> `sets` -> `train` keys),
    open the cache
    (default: the workspace's for `model`) and check it, load the training and validation splits."""
    entry = get_model_config(model)
    inputs = {k: v for k, v in dataset_inputs(entry, source.dataset).items() if v != entry[k]}  # DiDeMo's: more
    overrides, cfg = apply_overrides(inputs, entry.get("train", {}), config, list(sets))
    cfg = dataclasses.replace(cfg, **(train or {}))
    features = FeatureCache(cache or default_cache_path(model))
    check_cache(features, resolve_spec(model, pretrained, overrides), needs_frames=cfg.freeze == "none")
    train_split = source.split("train", features, features.path)
    return TrainSetup(model, pretrained, overrides, cfg, features, train_split,
                      source.validation_split(features, features.path), resolve_device(device), source.dataset)  # fmt: skip


def train_run(
    setup: TrainSetup, spec: ModelSpec, cfg: TrainConfig, run_dir: Path, *, resume: bool = False,
    overwrite: bool = False, on_event: Callable[[Event], None] | None = None, announce: bool = True,
) -> TrainState:  # fmt: skip
    """Train one model into `run_dir` (continuing its last checkpoint with `resume`), holding the folder's lock.
    announce: log whether a run was resumed or started fresh."""
    run = RunFolder(run_dir)
    lock = run.claim(resume, overwrite) if process_rank() == 0 else None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        model = create_model(spec).to(setup.device)
        tokenizer = Tokenizer(spec.clip, spec.config.max_words)
        data = TrainData.build(setup.train_split, setup.cache, tokenizer, cfg.freeze == "none")
        trainer = Trainer(model, spec, cfg, data, run, setup.device, setup.cache, on_event)
        resumed = resume and trainer.resume()
        if resume and announce:
            log.info(f"Resuming {run_dir} after epoch {trainer.state.epoch}." if resumed
                     else f"Nothing to resume in {run_dir}: starting from the beginning.")  # fmt: skip
        if process_rank() == 0:
            run.write_config({"spec": spec.to_dict(), "train": dataclasses.asdict(cfg), "dataset": setup.dataset,
                              "cache": str(setup.cache.path), "inputs": setup.cache.settings.track})  # fmt: skip
        return trainer.fit(setup.val_split)
    finally:
        if lock is not None:
            lock.close()


def train(
    source: DataSource, model: str = MODEL, *, output: Path | None = None, resume: bool = False,
    overwrite: bool = False, pretrained: str | None = None, cache: Path | None = None, config: Path | None = None,
    sets: Sequence[str] = (), epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
    seed: int | None = None, freeze_backbone: bool = False, device: str = DEVICE,
    on_event: Callable[[Event], None] | None = None, precision: str | None = None,
) -> TrainResult:  # fmt: skip
    """Train TC-MGC on `source` into `output` (default: a new run folder in the workspace; with `resume`, the
    newest run). Settings merge: recipe -> model config -> `config` -> `sets` -> the keyword arguments."""
    if resume and overwrite:
        raise ConfigError("pass --resume (continue the run) or --overwrite (start it again), not both.")
    if world_size() > 1 and output is None:
        raise ConfigError("under torchrun pass --output DIR, so that every process writes to the same run folder.")
    keys = train_keys(epochs, batch_size, lr, seed, precision, freeze_backbone)
    setup = prepare(source, model, pretrained=pretrained, cache=cache, config=config, sets=sets, train=keys,
                    device=device)  # fmt: skip
    run_dir = output or ((latest_run() if resume else None) or new_run_dir(model))
    state = train_run(setup, setup.spec(), setup.cfg, run_dir, resume=resume, overwrite=overwrite, on_event=on_event)
    return TrainResult(run_dir, state)
