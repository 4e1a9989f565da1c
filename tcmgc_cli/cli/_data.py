"""Options shared by train, evaluate and ablate, and the DataSource they describe."""

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tcmgc_cli.data.source import DataSource


class DatasetName(StrEnum):
    msrvtt = "msrvtt"
    didemo = "didemo"
    vatex = "vatex"
    csv = "csv"


DatasetOpt = Annotated[
    DatasetName, typer.Option(help="Dataset layout: msrvtt, didemo, vatex (as the reference code reads them) or csv.")
]
DataRootOpt = Annotated[Path | None, typer.Option(help="The dataset's annotation folder (not needed for csv).")]
AnnotationsOpt = Annotated[Path | None, typer.Option(help="With --dataset csv: a CSV with video_id,caption[,split].")]
CacheOpt = Annotated[Path | None, typer.Option(help="Feature cache. Default: <workspace>/cache/<model>.h5.")]
SkipMissingOpt = Annotated[
    bool, typer.Option("--skip-missing", help="Go on without videos that have no cached features.")
]
TrainListOpt = Annotated[str, typer.Option(help="MSR-VTT training list: 9k or 7k.")]


def source(
    dataset: DatasetName, data_root: Path | None, annotations: Path | None, skip_missing: bool, train_list: str = "9k"
) -> "DataSource":
    from tcmgc_cli.data.source import DataSource

    return DataSource(dataset.value, data_root, annotations, train_list, skip_missing)


ModelOpt = Annotated[str, typer.Option(help="Model config (see `tcmgc models`).")]
PretrainedOpt = Annotated[
    str | None, typer.Option(help="CLIP weights: open_clip tag or file. Default: the model config's.")
]
EpochsOpt = Annotated[int | None, typer.Option(help="Epochs. Default: the model config's (5 for B/32, 40 for tiny).")]
BatchSizeOpt = Annotated[
    int | None, typer.Option(help="Global batch size. Default: the model config's (128 for B/32).")
]
LrOpt = Annotated[float | None, typer.Option(help="Learning rate of the new modules (CLIP: lr x train.clip_lr_scale).")]
FreezeOpt = Annotated[bool, typer.Option("--freeze-backbone", help="Train only the new modules on cached embeddings.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: model.KEY=VALUE or train.KEY=VALUE (repeatable)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file with \\[model] and \\[train] tables.")]
