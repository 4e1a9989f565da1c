"""Dataset options shared by train, evaluate and ablate, and loading a split with the cache checks."""

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.data.annotations import Split


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


def load_checked_split(
    dataset: DatasetName, data_root: Path | None, annotations: Path | None, split: str, cache: "FeatureCache",
    skip_missing: bool, train_list: str = "9k",
) -> "Split":  # fmt: skip
    """A split whose videos are all in the cache (or, with skip_missing, restricted to those that are)."""
    from tcmgc_cli.cli._common import stderr
    from tcmgc_cli.data.annotations import load_split
    from tcmgc_cli.errors import CacheError
    from tcmgc_cli.train import missing_message

    data = load_split(dataset.value, data_root, split, annotations, train_list)
    missing = [v for v in data.video_ids if v not in cache]
    if missing and not skip_missing:
        raise CacheError(missing_message(missing, len(data.video_ids), cache.path))
    if missing:
        stderr.print(f"Skipping {len(missing)} videos without features (first: {', '.join(missing[:3])}).")
        data = data.restrict(set(cache.ids()))
    if not data.captions:
        raise CacheError(f"{data.summary()}: nothing left to use.")
    stderr.print(data.summary())
    return data


def open_trained(checkpoint: Path | None, cache_path: Path | None, device: str) -> tuple[Any, "FeatureCache", Path]:
    """The checkpoint (default: the newest run's best) and the cache it reads, checked against each other."""
    from tcmgc_cli.cache import FeatureCache
    from tcmgc_cli.errors import CheckpointError
    from tcmgc_cli.evaluate import check_cache, load_trained
    from tcmgc_cli.workspace import default_cache_path, latest_run

    source = checkpoint or latest_run()
    if source is None:
        raise CheckpointError("no trained run in the workspace: train one with `tcmgc train` or pass --checkpoint.")
    trained = load_trained(source, device)
    cache = FeatureCache(cache_path or default_cache_path(trained.spec.name))
    check_cache(cache, trained)
    return trained, cache, source


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
