"""`tcmgc train`: the reference recipe on a dataset whose features are in the cache."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from tcmgc_cli.cli._common import DeviceOpt, JsonOpt, handle_errors, print_json, stderr, stdout
from tcmgc_cli.cli._data import (
    AnnotationsOpt,
    BatchSizeOpt,
    CacheOpt,
    DataRootOpt,
    DatasetName,
    DatasetOpt,
    EpochsOpt,
    FreezeOpt,
    LrOpt,
    ModelOpt,
    PretrainedOpt,
    SkipMissingOpt,
    TrainListOpt,
    load_checked_split,
)  # fmt: skip
from tcmgc_cli.errors import ConfigError

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: model.KEY=VALUE or train.KEY=VALUE (repeatable)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file with \\[model] and \\[train] tables.")]


def train_command(
    dataset: DatasetOpt = DatasetName.msrvtt,
    data_root: DataRootOpt = None,
    annotations: AnnotationsOpt = None,
    cache: CacheOpt = None,
    output: Annotated[
        Path | None, typer.Option(help="Run folder. Default: a new <workspace>/runs/<time>-<model>.")
    ] = None,
    model: ModelOpt = "tcmgc-b32",
    pretrained: PretrainedOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --output (default: the newest run).")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Start again in an --output that already holds a run (deletes its checkpoints)."
        ),
    ] = False,
    freeze_backbone: FreezeOpt = False,
    seed: Annotated[int | None, typer.Option(help="Random seed. Default: 42.")] = None,
    skip_missing: SkipMissingOpt = False,
    train_list: TrainListOpt = "9k",
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Train TC-MGC. Checkpoints each epoch (atomic), keeps the best by validation t2v R@1, logs metrics.jsonl.

    Merge order of settings: defaults (the reference recipe) -> the model config -> --config -> --set -> flags.
    """
    with handle_errors(interrupted="finished epochs are kept; add --resume to the same command to continue."):
        if resume and overwrite:
            raise ConfigError("pass --resume (continue the run) or --overwrite (start it again), not both.")
        flags: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
        if freeze_backbone:
            flags["freeze"] = "all"
        summary = _run(dataset, data_root, annotations, cache, output, model, pretrained, config, set_ or [],
                       {k: v for k, v in flags.items() if v is not None}, resume, overwrite, skip_missing, train_list, device, json_out)  # fmt: skip
        if json_out and int(os.environ.get("RANK", "0")) == 0:
            print_json(summary)


@dataclass
class Setup:
    """Everything a training run needs besides the model's head config and seed."""

    model_name: str
    pretrained: str | None
    overrides: dict[str, Any]
    cfg: Any  # TrainConfig
    cache: Any  # FeatureCache
    train_split: Any  # Split
    val_split: Any  # Split | None
    device: Any  # torch.device
    dataset: str


def prepare(
    dataset: DatasetName, data_root: Path | None, annotations: Path | None, cache_path: Path | None, model_name: str,
    pretrained: str | None, config: Path | None, sets: list[str], flags: dict[str, Any], skip_missing: bool,
    train_list: str, device: str,
) -> Setup:  # fmt: skip
    """Resolve settings (recipe -> model config -> --config -> --set -> flags), open the cache, load the splits."""
    import dataclasses

    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.config import apply_overrides
    from tcmgc_cli.model.encoder import resolve_device
    from tcmgc_cli.model.factory import resolve_spec
    from tcmgc_cli.model.registry import get_model_config
    from tcmgc_cli.train import check_training_cache
    from tcmgc_cli.workspace import default_cache_path

    entry = get_model_config(model_name)
    overrides, cfg = apply_overrides({}, entry.get("train", {}), config, sets)
    cfg = dataclasses.replace(cfg, **flags)
    cache = FeatureCache(cache_path or default_cache_path(model_name))
    check_training_cache(cache, resolve_spec(model_name, pretrained, overrides), cfg)
    train_split = load_checked_split(dataset, data_root, annotations, "train", cache, skip_missing, train_list)
    val_split = _validation_split(dataset, data_root, annotations, cache, skip_missing)
    return Setup(
        model_name, pretrained, overrides, cfg, cache, train_split, val_split, resolve_device(device), dataset.value
    )


def train_once(
    setup: Setup, spec: Any, cfg: Any, run_dir: Path, resume: bool, on_event: Any, say_fresh: bool = True,
    overwrite: bool = False,
) -> Any:  # fmt: skip
    """Train one model into run_dir (resuming its last checkpoint when asked); returns the TrainState."""
    import contextlib

    from tcmgc_cli.train import claim_run

    lock = claim_run(run_dir, resume, overwrite) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        return _train_locked(setup, spec, cfg, run_dir, resume, on_event, say_fresh)


def _train_locked(
    setup: Setup, spec: Any, cfg: Any, run_dir: Path, resume: bool, on_event: Any, say_fresh: bool
) -> Any:
    import dataclasses
    import json

    from tcmgc_cli.fileio import write_text_atomic
    from tcmgc_cli.model.encoder import Tokenizer
    from tcmgc_cli.model.factory import create_model
    from tcmgc_cli.train import TrainData, Trainer, seed_everything

    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    model = create_model(spec).to(setup.device)
    data = TrainData.build(
        setup.train_split, setup.cache, Tokenizer(spec.clip, spec.config.max_words), cfg.freeze == "none"
    )
    trainer = Trainer(model, spec, cfg, data, run_dir, setup.device, setup.cache, on_event)
    if resume and not trainer.resume():
        if say_fresh:
            stderr.print(f"Nothing to resume in {run_dir}: starting from the beginning.")
    elif resume:
        stderr.print(f"Resuming {run_dir} after epoch {trainer.state.epoch}.")
    if int(os.environ.get("RANK", "0")) == 0:
        write_text_atomic(run_dir / "config.json", json.dumps({"spec": spec.to_dict(), "train": dataclasses.asdict(cfg),
                                                              "dataset": setup.dataset, "cache": str(setup.cache.path)}, indent=1))  # fmt: skip
    return trainer.fit(setup.val_split)


def _run(
    dataset: DatasetName, data_root: Path | None, annotations: Path | None, cache_path: Path | None, output: Path | None,
    model_name: str, pretrained: str | None, config: Path | None, sets: list[str], flags: dict[str, Any], resume: bool,
    overwrite: bool, skip_missing: bool, train_list: str, device: str, quiet: bool,
) -> dict[str, Any]:  # fmt: skip
    from tcmgc_cli.model.factory import resolve_spec
    from tcmgc_cli.workspace import latest_run, new_run_dir

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and output is None:
        raise ConfigError("under torchrun pass --output DIR, so that every process writes to the same run folder.")
    setup = prepare(
        dataset,
        data_root,
        annotations,
        cache_path,
        model_name,
        pretrained,
        config,
        sets,
        flags,
        skip_missing,
        train_list,
        device,
    )
    spec = resolve_spec(model_name, pretrained, setup.overrides)
    run_dir = output or ((latest_run() if resume else None) or new_run_dir(model_name))
    with live_view(quiet or rank != 0) as on_event:
        state = train_once(setup, spec, setup.cfg, run_dir, resume, on_event, overwrite=overwrite)
    last = state.history[-1] if state.history else {}
    summary = {"run": str(run_dir), "epochs": state.epoch, "steps": state.step, "best_epoch": state.best_epoch,
               "best_t2v_R@1": state.best, "last": last}  # fmt: skip
    if not quiet and rank == 0:
        from tcmgc_cli.reporting import metrics_table

        stdout.print(
            metrics_table(
                {k: v for k, v in last.items() if "@" in k or "Md" in k or "Mn" in k}, title=f"epoch {state.epoch}"
            )
        )
        stdout.print(f"Run: {run_dir} (best t2v R@1 {state.best:.1f} at epoch {state.best_epoch})")
    return summary


def _validation_split(
    dataset: DatasetName, data_root: Path | None, annotations: Path | None, cache: Any, skip: bool
) -> Any:
    """The split the reference validates on: MSR-VTT's 1k-A test set; val where a dataset has one, else test."""
    from tcmgc_cli.data.annotations import load_split
    from tcmgc_cli.errors import AnnotationError

    for name in ("test",) if dataset == DatasetName.msrvtt else ("val", "test"):
        try:
            if not load_split(dataset.value, data_root, name, annotations).captions:
                continue
        except AnnotationError:
            continue
        return load_checked_split(dataset, data_root, annotations, name, cache, skip)
    stderr.print("No validation split: every epoch's checkpoint counts as the best.")
    return None


class live_view:
    """A Rich live line per step (epoch, batch, loss parts, lr, it/s, ETA); silent with --json."""

    def __init__(self, quiet: bool) -> None:
        from tcmgc_cli.cli._common import make_progress

        self.progress = make_progress("steps", disable=quiet)
        self.task: Any = None

    def __enter__(self) -> Any:
        self.progress.__enter__()

        def on_event(e: dict[str, Any]) -> None:
            if e["kind"] == "step":
                if self.task is None:
                    self.task = self.progress.add_task("train", total=e["batches"], rate="")
                self.progress.update(
                    self.task, completed=e["batch"], total=e["batches"], description=f"epoch {e['epoch']}",
                    rate=f"loss {e['loss']:.3f} (nce {e['loss_nce']:.3f} sdr {e['loss_sdr']:.3f}) lr {e['lr']:.2e} {e['it_s']:.1f} it/s",
                )  # fmt: skip
            elif "t2v_R@1" in e:
                self.progress.console.print(f"epoch {e['epoch']}: t2v R@1 {e['t2v_R@1']:.1f}  R@5 {e['t2v_R@5']:.1f}  "
                                            f"v2t R@1 {e['v2t_R@1']:.1f}  ({e['seconds']:.1f} s)")  # fmt: skip

        return on_event

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
