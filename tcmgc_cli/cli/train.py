"""`tcmgc train`: the reference recipe on a dataset whose features are in the cache."""

from pathlib import Path
from typing import Annotated, Any

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import (
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    ThreadsOpt,
    cap_threads,
    handle_errors,
    print_json,
    stdout,
)
from tcmgc_cli.cli._data import (
    AnnotationsOpt,
    BatchSizeOpt,
    CacheOpt,
    ConfigOpt,
    DataRootOpt,
    DatasetName,
    DatasetOpt,
    EpochsOpt,
    FreezeOpt,
    LrOpt,
    ModelOpt,
    PretrainedOpt,
    SetOpt,
    SkipMissingOpt,
    TrainListOpt,
    source,
)  # fmt: skip


def train_command(
    dataset: DatasetOpt = DatasetName.msrvtt,
    data_root: DataRootOpt = None,
    annotations: AnnotationsOpt = None,
    cache: CacheOpt = None,
    output: Annotated[
        Path | None, typer.Option(help="Run folder. Default: a new <workspace>/runs/<time>-<model>.")
    ] = None,
    model: ModelOpt = defaults.MODEL,
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
    device: DeviceOpt = defaults.DEVICE,
    precision: PrecisionOpt = defaults.PRECISION,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train TC-MGC. Checkpoints each epoch (atomic), keeps the best by validation t2v R@1, logs the metrics
    of every step and epoch in the run folder.

    Merge order of settings: defaults (the reference recipe) -> the model config -> --config -> --set -> flags.
    """
    with handle_errors(interrupted="finished epochs are kept; add --resume to the same command to continue."):
        from tcmgc_cli.config import TrainConfig
        from tcmgc_cli.options import train_keys

        TrainConfig(**train_keys(epochs, batch_size, lr, seed, precision))  # the flags' values, checked at once
        from tcmgc_cli.distributed import process_rank
        from tcmgc_cli.training import train

        cap_threads(threads)
        quiet = json_out or process_rank() != 0
        with live_view(quiet) as on_event:
            result = train(
                source(dataset, data_root, annotations, skip_missing, train_list), model, output=output, resume=resume,
                overwrite=overwrite, pretrained=pretrained, cache=cache, config=config, sets=set_ or [], epochs=epochs,
                batch_size=batch_size, lr=lr, seed=seed, freeze_backbone=freeze_backbone, device=device, on_event=on_event,
                precision=precision,
            )  # fmt: skip
        if process_rank() != 0:
            return
        if json_out:
            print_json(result.to_dict())
            return
        from tcmgc_cli.cli.render import metrics_table

        state = result.state
        last = state.history[-1] if state.history else {}
        stdout.print(metrics_table(last, title=f"epoch {state.epoch}"))
        stdout.print(f"Run: {result.run} (best t2v R@1 {state.best:.1f} at epoch {state.best_epoch})")


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
