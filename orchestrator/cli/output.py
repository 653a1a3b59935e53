"""Shared output helpers: one console, JSON printing, error lines."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]  # every table has it


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail_line(message: str) -> None:
    err_console.print(f"[bold red]pd: error:[/] {message}", soft_wrap=True)
