"""`tcmgc models`: the registered model configs and the size of what TC-MGC adds to CLIP."""

from typing import Annotated

import typer

from tcmgc_cli.cli._common import JsonOpt, handle_errors, print_json


def models_command(
    all_models: Annotated[
        bool,
        typer.Option("--all", help="Every open_clip architecture --model accepts, with its pretrained tags."),
    ] = False,
    show_precision: Annotated[
        bool,
        typer.Option(
            "--precision",
            help="The precisions `auto` measured on this host (kept in "
            "~/.cache/tcmgc/precision.json): each tower or training step, its fp32 and bf16 times, the choice.",
        ),  # fmt: skip
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="With --precision: forget them (the next `auto` run measures again).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the model configs that --model accepts, with the parameter count of each new module.

    Columns (the per-module ones on a terminal of 110 columns or more, and always in --json): temporal encoder, LVA,
    G and L matrices, all ISA matrices, LSA, and the head's total. With --all, every
    open_clip architecture (any of them extracts and searches with --scorer clip; TC-MGC needs a text tower with
    per-token features: CLIP-style and SigLIP towers).
    """
    if all_models:
        with handle_errors():
            _architectures(json_out)
        return
    if show_precision or clear:
        with handle_errors():
            _precision(clear, json_out)
        return
    from tcmgc_cli.cli._common import stdout
    from tcmgc_cli.model.factory import resolve_spec
    from tcmgc_cli.model.registry import get_model_config, list_models
    from tcmgc_cli.model.tcmgc import head_parameter_counts

    with handle_errors():
        rows = []
        for name in list_models():
            spec = resolve_spec(name)
            rows.append({"name": name, **get_model_config(name), "head_parameters": head_parameter_counts(spec.config)})
        if json_out:
            print_json(rows)
            return
        from tcmgc_cli.cli.render import models_table

        stdout.print(models_table(rows, stdout.width))


def _architectures(json_out: bool) -> None:
    from rich.table import Table

    from tcmgc_cli.cli._common import stdout
    from tcmgc_cli.model.encoder import pretrained_tags
    from tcmgc_cli.model.registry import get_model_config, open_clip_architectures

    tags = pretrained_tags()
    rows = [{"name": n, **get_model_config(n), "tags": tags.get(n, [])} for n in open_clip_architectures()]
    if json_out:
        print_json(rows)
        return
    table = Table("architecture", "D", "words", "pretrained tags (--pretrained)", title="open_clip architectures")
    for r in rows:
        table.add_row(r["name"], str(r["embed_dim"]), str(r["max_words"]), ", ".join(r["tags"]) or "-")
    stdout.print(table)


def _precision(clear: bool, json_out: bool) -> None:
    from rich.table import Table

    from tcmgc_cli import precision as prec
    from tcmgc_cli.cli._common import stdout

    if clear:
        gone = prec.forget()
        if json_out:
            print_json({"cleared": gone})
        else:
            stdout.print(f"Forgot {gone} precision record(s).")
        return
    rows = [{"host": key.rsplit("|", 1)[0], "role": key.rsplit("|", 1)[1], **r, "stale": prec.stale(r)}
            for key, r in sorted(prec.records().items())]  # fmt: skip
    if json_out:
        print_json(rows)
        return
    table = Table("what runs", "fp32 s", "bf16 s", "chose", "when", title=f"precision records ({prec.record_path()})")
    for r in rows:
        note = " (measured again next time)" if r["stale"] else ""
        table.add_row(r["role"], f"{r['fp32_s']:.4f}", f"{r['bf16_s']:.4f}", f"{r['precision']}{note}", r["when"])
    stdout.print(table if rows else "No precision records: `auto` measures the first time a model runs here.")
