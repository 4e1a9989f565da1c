"""What every command shares: option types, the error boundary, consoles and progress bars."""

import contextlib
import inspect
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperCommand, TyperGroup

from tcmgc_cli.errors import ConfigError, TcmgcError

stderr = Console(stderr=True)
stdout = Console()

DeviceOpt = Annotated[str, typer.Option(help="Where the model runs: auto (CUDA when present), cpu, cuda or cuda:N.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        help="auto (the faster of fp32 and bf16 on this machine for this model, measured the first time, bf16 only "
        "within 1e-3 cosine of fp32), fp32 or bf16: the text tower and temporal encoder (training: the whole step)."
    ),
]
IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        help="Where the search's coarse stage runs: leave it out for the built-in index; a path ending in .db for "
        "Milvus Lite; http://HOST:PORT (https://... with $TCMGC_INDEX_TOKEN) for a Milvus server or cluster, kept in "
        "step with `tcmgc index sync`. Default: $TCMGC_INDEX.",
    ),
]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="At most this many CPU threads (to run in the background). Default: every core.")
]


def cap_threads(threads: int | None) -> None:
    """--threads: a one-line error below 1, else torch's CPU threads capped (before any model runs)."""
    from tcmgc_cli.precision import cap_threads as cap

    cap(threads)


@contextlib.contextmanager
def handle_errors(interrupted: str = "finished work is kept; rerun the same command to continue.") -> Iterator[None]:
    """Expected failures become one line on stderr: exit 2 for bad options, 1 for everything else (file-system
    errors included: they name the file and the fix), 130 for Ctrl-C with `interrupted` saying how to go on."""
    _show_library_notes()
    try:
        yield
    except ConfigError as err:
        _error(str(err))
        raise typer.Exit(2) from None
    except TcmgcError as err:
        _error(str(err))
        raise typer.Exit(1) from None
    except OSError as err:
        from tcmgc_cli.fileio import describe_os_error

        _error(describe_os_error(err))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print(f"Interrupted: {interrupted}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


class _StderrNotes(logging.Handler):
    """The library's log lines (split summaries, skipped videos, resumes) as plain lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else None
        stderr.print(record.getMessage(), style=style, highlight=False, markup=False, soft_wrap=True)


def _show_library_notes() -> None:
    logger = logging.getLogger("tcmgc_cli")
    if not any(isinstance(h, _StderrNotes) for h in logger.handlers):
        logger.addHandler(_StderrNotes())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _error(message: str) -> None:
    stderr.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def make_progress(unit: str, disable: bool = False) -> Progress:
    """A Rich progress bar on stderr with a rate in `unit`/s."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=disable,
        transient=False,
    )


def _no_flag_values(params: list[Any]) -> list[Any]:
    """A flag takes no value: its help line shows none (Typer would print a `<bool>` there)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_values(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_flag_values(super().get_params(ctx))


def command_help(command: Callable[..., Any]) -> str:
    """A command's docstring as its help page, each paragraph one line that the terminal wraps (Typer keeps a
    docstring's line breaks, which cut its sentences at 80 columns)."""
    paragraphs = inspect.cleandoc(command.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)
