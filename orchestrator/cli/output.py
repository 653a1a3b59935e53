"""Shared output helpers: one console, JSON printing, error lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]  # every table has it
# Every command about one run takes it so; ``RunStore.open(None)`` is the newest run.
RUN = Annotated[str | None, typer.Argument(metavar="RUN", help="Run id (default: the newest run).")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail_line(message: str) -> None:
    """The message as it is: a pattern such as ``[a-z0-9]`` is text, not rich markup."""
    err_console.print(Text.assemble(("pd: error:", "bold red"), " ", message), soft_wrap=True)


def say(message: str) -> None:
    """A plain line on stdout; paths and user text are never read as markup."""
    console.print(message, markup=False, soft_wrap=True)
