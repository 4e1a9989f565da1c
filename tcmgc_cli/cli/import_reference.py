"""`tcmgc import-reference`: a checkpoint of the reference TC-MGC code as a run folder."""

from pathlib import Path
from typing import Annotated

import typer

from tcmgc_cli import defaults
from tcmgc_cli.cli._common import JsonOpt, handle_errors, print_json, stdout
from tcmgc_cli.cli._data import ModelOpt, SetOpt


def import_reference_command(
    checkpoint: Annotated[Path, typer.Argument(help="The file the reference code saved (its model's state dict).")],
    keep_rate: Annotated[
        float,
        typer.Option(help="The keep rate r it was trained with (0.1 in the paper); its k = floor(Nw r) must match."),
    ],
    output: Annotated[Path, typer.Option(help="The run folder to create (evaluate/search --checkpoint take it).")],
    dataset: Annotated[
        str,
        typer.Option(help="The dataset it was trained on, for Nw and Nf: msrvtt, vatex (32, 12) or didemo (64, 64)."),
    ] = "msrvtt",
    model: ModelOpt = defaults.MODEL,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Turn a checkpoint saved by the reference TC-MGC code into a run folder that `evaluate`, `search` and
    `train --resume` accept. Its image tower was fine-tuned: evaluate it on a cache extracted with --store-frames."""
    with handle_errors():
        from tcmgc_cli.checkpoint import import_reference_run

        run = import_reference_run(checkpoint, output, keep_rate, dataset, model, set_ or [])
        if json_out:
            print_json({"run": str(run), "checkpoint": str(checkpoint)})
        else:
            from tcmgc_cli.checkpoint import RunFolder

            folder = RunFolder(run)
            stdout.print(f"Wrote {folder.best} and {folder.last}: tcmgc evaluate --checkpoint {run} ...")
