"""Live progress of a run in the terminal: one line per event as it happens."""

from __future__ import annotations

import time

from orchestrator.cli.output import console
from orchestrator.record import events as ev
from orchestrator.record.eventtext import format_event

QUIET = (ev.WorkerSpawned, ev.WorkerReady, ev.ControlReceived)
STYLES: dict[type[ev.Event], str] = {
    ev.TaskMerged: "green",
    ev.TaskAlreadyMerged: "green",
    ev.TaskRejected: "yellow",
    ev.AttemptFailed: "yellow",
    ev.TaskFailed: "bold red",
    ev.PlanAccepted: "green",
    ev.PlanAttemptFailed: "yellow",
    ev.WorkerCrashed: "red",
    ev.RunFinished: "bold",
    ev.RunAborted: "bold red",
    ev.Progress: "dim",
}


class ProgressPrinter:
    """Prints events with the time since the run started; tool lines only when verbose."""

    def __init__(self, verbose: bool = False, quiet: bool = False) -> None:
        self.verbose = verbose
        self.quiet = quiet
        self.start = time.time()

    def __call__(self, event: ev.Event) -> None:
        if self.quiet or isinstance(event, QUIET):
            return
        if isinstance(event, ev.Progress) and not self.verbose:
            return
        line = format_event(event)
        if line is None:
            return
        style = STYLES.get(type(event), "")
        elapsed = (event.at or time.time()) - self.start
        text = f"{elapsed:6.1f}s  {line}"
        console.print(text, style=style or None, markup=False, soft_wrap=True)
