"""`tcmgc evaluate`: retrieval metrics of a trained model on a dataset split."""

from pathlib import Path
from typing import Annotated, NamedTuple

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli import _common as common
from tcmgc_cli.cli._common import DeviceOpt, JsonOpt, handle_errors, make_progress, print_json, stdout
from tcmgc_cli.cli._data import (
    AnnotationsOpt,
    CacheOpt,
    DataRootOpt,
    DatasetName,
    DatasetOpt,
    SkipMissingOpt,
    source,
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
    moments_file: Annotated[
        Path | None,
        typer.Option(
            "--moments",
            help="Moment retrieval instead: a JSONL file in QVHighlights' format (qid, query, vid, duration, "
            "relevant_windows) over the videos of --cache. Prints R1@0.5/0.7 and mAP inside each query's video, and "
            "the corpus figures (the right video's moment at the top, or in the first 10).",
        ),
    ] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option(help="With --moments: write each query's predicted windows here (pred_relevant_windows)."),
    ] = None,
    attention: Annotated[
        bool,
        typer.Option(
            "--attention",
            help="With --moments: also measure where LVA's attention lands against the true windows, over the entry "
            "that best covers each: the sentence's attention mass inside (attention_in_span) against the share of "
            "frames inside (attention_uniform), and the share of words whose most-attended frame is inside "
            "(word_pointing) against its chance level.",
        ),
    ] = False,
    attention_png: Annotated[
        Path | None,
        typer.Option(
            help="With --moments: draw the first 6 queries' word-by-frame attention, true windows boxed, "
            "as a PNG here (implies --attention)."
        ),  # fmt: skip
    ] = None,
    scorer: Annotated[
        str, typer.Option(help="With --moments: tcmgc (a checkpoint), clip (no training), or auto.")
    ] = defaults.SCORER,
    device: DeviceOpt = defaults.DEVICE,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32 (so that a checkpoint's numbers are the same on every host), bf16, or auto (the faster of the "
            "two on this machine) for the text tower and the temporal encoder. The --json result says which."
        ),
    ] = defaults.EVAL_PRECISION,
    threads: common.ThreadsOpt = None,
    index_uri: common.IndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Score every text of a split against every video and print R@1/5/10, MdR and MnR in both directions.

    Ranks count candidates scoring strictly higher than the ground truth; ties are reported, never split. With
    --moments, moment retrieval metrics of the field instead.
    """
    with handle_errors():
        common.cap_threads(threads)
        if moments_file is not None:
            check = AttentionCheck(attention or attention_png is not None, attention_png)
            _moments(moments_file, checkpoint, cache, scorer, device, save_predictions, json_out, precision, index_uri,
                     check)  # fmt: skip
            return
        if attention or attention_png is not None:
            raise typer.BadParameter("--attention and --attention-png measure moments: pass --moments FILE too.")
        from tcmgc_cli.distributed import process_rank
        from tcmgc_cli.evaluation.retrieval import evaluate

        with make_progress("texts", disable=json_out or process_rank() != 0) as progress:
            task = progress.add_task("score", total=None, rate="")
            metrics = evaluate(
                source(dataset, data_root, annotations, skip_missing), checkpoint, split=split, cache=cache, dsl=dsl,
                chunk=chunk, save_scores=save_scores, device=device, precision=precision,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )  # fmt: skip
        if process_rank() != 0:
            return  # under torchrun, rank 0 reports for every process
        if json_out:
            print_json(metrics)
            return
        from tcmgc_cli.cli.render import metrics_table

        title = f"{dataset.value} {split}: {metrics['num_queries']} queries x {metrics['num_videos']} videos"
        stdout.print(metrics_table(metrics, title=title))
        stdout.print(f"{metrics['pairs_per_s']:,.0f} text-video pairs/s; ties at the ground truth: "
                     f"t2v {metrics['t2v_tied']}, v2t {metrics['v2t_tied']}")  # fmt: skip


def _moments(
    path: Path, checkpoint: Path | None, cache: Path | None, scorer: str, device: str, save: Path | None,
    json_out: bool, precision: str, index_uri: str | None, check: "AttentionCheck",
) -> None:  # fmt: skip
    from tcmgc_cli.cli.render import attention_check_table, attention_grid_png, moments_table
    from tcmgc_cli.evaluation.moment_retrieval import evaluate_moments
    from tcmgc_cli.options import EngineConfig

    if check.png is not None and check.png.suffix.lower() != ".png":
        raise typer.BadParameter(f"--attention-png {check.png} must end in .png.")
    if check.png is not None and not check.png.parent.is_dir():  # refused before the evaluation, not after it
        raise typer.BadParameter(f"--attention-png {check.png}: no folder {check.png.parent}; create it first.")
    metrics = evaluate_moments(path, checkpoint, cache=cache, scorer=scorer, device=device, save_predictions=save,
                               precision=precision, engine=EngineConfig.of(index_uri), attention=check.on)  # fmt: skip
    for note in metrics["notes"]:
        common.stderr.print(f"Note: {note}", highlight=False, soft_wrap=True)
    examples = metrics.pop("attention_examples", [])
    if check.png is not None:
        attention_grid_png(examples, check.png)
        common.stderr.print(f"Wrote {check.png} ({len(examples)} queries).", highlight=False)
    if json_out:
        print_json(metrics)
        return
    stdout.print(moments_table(metrics, f"{path.name}: {metrics['num_queries']} queries ({metrics['scorer']} scorer, "
                               f"{metrics['precision']})"))  # fmt: skip
    if check.on:
        stdout.print(attention_check_table(metrics))


class AttentionCheck(NamedTuple):
    on: bool
    png: Path | None
