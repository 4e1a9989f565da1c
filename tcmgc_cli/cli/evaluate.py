"""`tcmgc evaluate`: retrieval metrics of a trained model on a dataset split."""

from pathlib import Path
from typing import Annotated, Any

import typer

from tcmgc_cli.cli._common import DeviceOpt, JsonOpt, handle_errors, make_progress, print_json, stdout
from tcmgc_cli.cli._data import (
    AnnotationsOpt,
    CacheOpt,
    DataRootOpt,
    DatasetName,
    DatasetOpt,
    SkipMissingOpt,
    load_checked_split,
)  # fmt: skip

CheckpointOpt = Annotated[
    Path | None, typer.Option(help="Run folder (its best checkpoint) or checkpoint file. Default: the newest run.")
]


def evaluate_command(
    checkpoint: CheckpointOpt = None,
    dataset: DatasetOpt = DatasetName.msrvtt,
    data_root: DataRootOpt = None,
    annotations: AnnotationsOpt = None,
    split: Annotated[str, typer.Option(help="Split to score: train, val or test.")] = "test",
    cache: CacheOpt = None,
    dsl: Annotated[
        bool, typer.Option("--dsl", help="Re-rank with dual softmax at inference (not in the paper's numbers).")
    ] = False,
    chunk: Annotated[int, typer.Option(help="Texts and videos per scoring block (bounds peak memory).")] = 64,
    save_scores: Annotated[
        Path | None, typer.Option(help="Write the (texts, videos) score matrix here (.npz with ids).")
    ] = None,
    skip_missing: SkipMissingOpt = False,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Score every text of a split against every video and print R@1/5/10, MdR and MnR in both directions.

    Ranks count candidates scoring strictly higher than the ground truth; ties are reported, never split.
    """
    with handle_errors():
        metrics = _run(
            checkpoint,
            dataset,
            data_root,
            annotations,
            split,
            cache,
            dsl,
            chunk,
            save_scores,
            skip_missing,
            device,
            json_out,
        )
        if metrics is None:
            return  # under torchrun, rank 0 reports for every process
        if json_out:
            print_json(metrics)
        else:
            from tcmgc_cli.reporting import metrics_table

            title = f"{dataset.value} {split}: {metrics['num_queries']} queries x {metrics['num_videos']} videos"
            stdout.print(metrics_table(metrics, title=title))
            stdout.print(f"{metrics['pairs_per_s']:,.0f} text-video pairs/s; ties at the ground truth: "
                         f"t2v {metrics['t2v_tied']}, v2t {metrics['v2t_tied']}")  # fmt: skip


def _run(
    checkpoint: Path | None, dataset: DatasetName, data_root: Path | None, annotations: Path | None, split: str,
    cache_path: Path | None, dsl: bool, chunk: int, save_scores: Path | None, skip_missing: bool, device: str, quiet: bool,
) -> dict[str, Any] | None:  # fmt: skip
    import time

    import numpy as np

    from tcmgc_cli.cli._data import open_trained
    from tcmgc_cli.distributed import Dist
    from tcmgc_cli.errors import ConfigError
    from tcmgc_cli.evaluate import metrics_for, score_split

    if chunk < 1:
        raise ConfigError("--chunk must be at least 1.")
    trained, cache, source = open_trained(checkpoint, cache_path, device)
    data = load_checked_split(dataset, data_root, annotations, split, cache, skip_missing)
    dist = Dist.from_env(trained.device)
    with make_progress("texts", disable=quiet or dist.rank != 0) as progress:
        task = progress.add_task("score", total=len(data.captions), rate="")
        start = time.perf_counter()
        scores = score_split(
            trained, cache, data, chunk, lambda done, total: progress.update(task, completed=done), dist=dist
        )
        seconds = time.perf_counter() - start
    if dist.rank != 0:
        return None
    if save_scores is not None:
        np.savez_compressed(save_scores, scores=scores, video_ids=np.array(data.video_ids), captions=np.array(data.captions),
                            caption_video=np.array(data.caption_video))  # fmt: skip
    metrics: dict[str, Any] = metrics_for(scores, data, dsl)
    metrics["pairs_per_s"] = scores.size / seconds
    metrics["checkpoint"] = str(source)
    return metrics
