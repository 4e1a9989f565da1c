"""The `tcmgc` command line. Thin: parse options, call the library, render. Heavy imports happen inside commands."""

from typing import Annotated

import typer

from tcmgc_cli import __version__
from tcmgc_cli.cli import ablate as _ablate
from tcmgc_cli.cli import evaluate as _evaluate
from tcmgc_cli.cli import extract as _extract
from tcmgc_cli.cli import import_reference as _import_reference
from tcmgc_cli.cli import index as _index
from tcmgc_cli.cli import models as _models
from tcmgc_cli.cli import search as _search
from tcmgc_cli.cli import serve as _serve
from tcmgc_cli.cli import train as _train
from tcmgc_cli.cli._common import Command, Group, command_help

app = typer.Typer(
    cls=Group,
    name="tcmgc",
    help="Text-to-video retrieval with TC-MGC: extract features, train, evaluate, search, ablate and serve a search page.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tcmgc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Text-to-video retrieval with TC-MGC (arXiv 2504.04707)."""


app.command("extract", cls=Command, help=command_help(_extract.extract_command))(_extract.extract_command)
app.command("train", cls=Command, help=command_help(_train.train_command))(_train.train_command)
app.command("evaluate", cls=Command, help=command_help(_evaluate.evaluate_command))(_evaluate.evaluate_command)
app.command("search", cls=Command, help=command_help(_search.search_command))(_search.search_command)
app.command("ablate", cls=Command, help=command_help(_ablate.ablate_command))(_ablate.ablate_command)
app.command("models", cls=Command, help=command_help(_models.models_command))(_models.models_command)
app.command("serve", cls=Command, help=command_help(_serve.serve_command))(_serve.serve_command)
app.add_typer(_index.app, name="index", cls=Group)
app.command("import-reference", cls=Command, help=command_help(_import_reference.import_reference_command))(
    _import_reference.import_reference_command
)


def main() -> None:
    app()
