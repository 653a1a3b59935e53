"""Live progress of a run in the terminal: one line per event as it happens."""

from __future__ import annotations

import time
from typing import Any

from orchestrator.cli.output import console
from orchestrator.record.eventtext import format_event

STYLES = {
    "task_merged": "green",
    "task_already_merged": "green",
    "task_rejected": "yellow",
    "attempt_failed": "yellow",
    "task_failed": "bold red",
    "plan_accepted": "green",
    "plan_attempt_failed": "yellow",
    "worker_crashed": "red",
    "run_finished": "bold",
    "run_aborted": "bold red",
    "progress": "dim",
}


class ProgressPrinter:
    """Prints events with the time since the run started; tool lines only when verbose."""

    def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.start = time.time()

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet or event["kind"] in ("worker_spawned", "worker_ready", "control"):
            return
        if event["kind"] == "progress" and not self.verbose:
            return
        line = format_event(event)
        if line is None:
            return
        style = STYLES.get(event["kind"], "")
        elapsed = event.get("at", time.time()) - self.start
        text = f"{elapsed:6.1f}s  {line}"
        console.print(text, style=style or None, markup=False, soft_wrap=True)
