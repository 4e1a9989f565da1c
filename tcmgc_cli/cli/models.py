"""`tcmgc models`: the registered model configs."""

from tcmgc_cli.cli._common import JsonOpt, handle_errors, print_json


def models_command(json_out: JsonOpt = False) -> None:
    """List the model configs that --model accepts."""
    from rich.table import Table

    from tcmgc_cli.cli._common import stdout
    from tcmgc_cli.model.registry import get_model_config, list_models

    with handle_errors():
        rows = [{"name": name, **get_model_config(name)} for name in list_models()]
        if json_out:
            print_json(rows)
            return
        table = Table("model", "CLIP (open_clip)", "weights", "frames", "words", "description")
        for r in rows:
            table.add_row(
                r["name"], r["clip"], str(r["pretrained"] or "random init"),
                str(r["num_frames"]), str(r["max_words"]), r.get("description", ""),
            )  # fmt: skip
        stdout.print(table)
