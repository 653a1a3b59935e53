"""One line of human text per event, shared by live progress, logs and reports."""

from __future__ import annotations

import time
from typing import Any


def _short(sha: str | None) -> str:
    return (sha or "")[:10]


def _first_line(text: str | None, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


FORMATS: dict[str, Any] = {
    "run_started": lambda e: (
        f"run started: mission {e['mission']} on {e['target_branch']} "
        f"at {_short(e['head'])} with {len(e['workers'])} workers"
    ),
    "worker_spawned": lambda e: f"{e['worker']} spawned ({e['role']})",
    "worker_ready": lambda e: f"{e['worker']} ready (pid {e['pid']})",
    "worker_crashed": lambda e: (
        f"{e['worker']} died (exit code {e['exitcode']})"
        + (f" during {e['task']}" if e.get("task") else "")
    ),
    "worker_respawned": lambda e: f"{e['worker']} respawned (pid {e['pid']})",
    "worker_retired": lambda e: f"{e['worker']} retired",
    "worker_failed_to_start": lambda e: f"{e['worker']} failed to start: {e['error']}",
    "heartbeat_missed": lambda e: f"{e['worker']} silent for {e['seconds']}s: killing it",
    "task_assigned": lambda e: f"{e['worker']} ▶ {e['task']} (attempt {e['attempt']})",
    "task_submitted": lambda e: (
        f"{e['worker']} ✓ {e['task']} done: {len(e['files'])} files at {_short(e['commit'])}"
    ),
    "merge_started": lambda e: f"merge ⇢ {e['task']}",
    "task_merged": lambda e: f"merge ✓ {e['task']} → {_short(e['head'])} ({e['seconds']}s)",
    "task_rejected": lambda e: f"merge ✗ {e['task']}: {e['reason']}",
    "task_already_merged": lambda e: (
        f"{e['task']} changed nothing: already in the target at {_short(e['commit'])}"
    ),
    "attempt_failed": lambda e: (
        f"{e['task']} attempt {e['attempt']} failed: {_first_line(e['reason'])} → {e['state']}"
    ),
    "attempt_infra_failed": lambda e: (
        f"{e['task']} attempt {e['attempt']} broke on pd's side, retried without charge: "
        f"{_first_line(e['reason'])} → {e['state']}"
    ),
    "task_failed": lambda e: (
        f"{e['task']} failed after {e['attempts']} attempts"
        + (f"; blocked: {', '.join(e['blocked'])}" if e.get("blocked") else "")
    ),
    "task_aborted": lambda e: f"{e['task']} aborted",
    "handoff_requested": lambda e: f"{e['worker']} asked to hand off {e['task']}",
    "handoff_refused": lambda e: f"no handoff for {e['worker']}: {e['reason']}",
    "attempt_handed_off": lambda e: (
        f"{e['task']} attempt {e['attempt']} handed off by {e['worker']}: work in progress at "
        f"{_short(e['commit'])}; a fresh start goes on from it"
    ),
    "plan_assigned": lambda e: f"{e['worker']} ▶ planning the goal (attempt {e['attempt']})",
    "plan_accepted": lambda e: (
        f"{e['worker']} ✓ plan accepted: {len(e['tasks'])} tasks; critical path "
        + " → ".join(e.get("critical_path", []))
    ),
    "plan_attempt_failed": lambda e: (
        f"planning attempt {e['attempt']} failed: {_first_line(e['reason'])} → {e['state']}"
    ),
    "review_started": lambda e: (
        f"{e['worker']} ▶ review of {e['task']} (round {e['round']}) at {_short(e['commit'])}"
    ),
    "review_done": lambda e: (
        f"{e['worker']} review of {e['task']} round {e['round']}: "
        + ("approved" if e["verdict"] == "approve" else "changes requested")
        + (f": {_first_line(e['comments'])}" if e.get("comments") else "")
    ),
    "review_failed": lambda e: (
        f"review of {e['task']} round {e['round']} failed ({e['failures']}): "
        f"{_first_line(e['reason'])} → {e['state']}"
    ),
    "review_rounds_exhausted": lambda e: (
        f"{e['task']}: {e['rounds']} review rounds asked for changes; this version goes "
        "to the merge queue unreviewed (the gate still decides)"
    ),
    "merger_crashed": lambda e: f"merger died (exit code {e['exitcode']}): restarting",
    "control": lambda e: (
        f"request: {e['action']}"
        + (f" task {e['task']}" if e.get("task") else "")
        + (f" worker {e['worker']}" if e.get("worker") else "")
    ),
    "run_aborted": lambda e: f"run aborted: {e['reason']}",
    "run_stalled": lambda e: f"run stalled: {e['reason']}",
    "run_finished": lambda e: (
        f"run {e['status']} (exit code {e['exit_code']}) at {_short(e['head'])}"
    ),
    "budget_exhausted": lambda e: f"{e['reason']}: no new calls; finished work still merges",
    "run_halting": lambda e: f"stopping: {e['reason']}",
    "run_stopped": lambda e: (
        f"run stopped: {e['reason']}"
        + (f"; not run: {', '.join(e['tasks'])}" if e.get("tasks") else "")
    ),
    "call_failed": lambda e: (
        f"{e['worker']} model call failed ({e['status']}): "
        f"{_first_line(e['error'])}"
        + (f"; everyone waits {e['retry_after']:.1f}s" if e.get("retry_after") else "")
    ),
    # Only a lost call's usage is worth a line: the others are summed by ``pd report``.
    "usage": lambda e: (
        f"{e['worker']} died mid-call on {e['task']}: lost call, charged at reservation "
        f"(${e['cost']})"
        if e.get("lost")
        else None
    ),
    "budget_overrun": lambda e: (
        f"{e['worker']}: the provider billed ${e['amount']} more than reserved on {e['task']}; "
        "later calls of that model reserve more"
    ),
    "cassette_recorded": lambda e: f"recorded every model exchange in {e['path']}",
    "progress": lambda e: f"{e['worker']}   {e['task']}: {e['text']}",
}


def format_event(event: dict[str, Any]) -> str | None:
    """The event as one line, or None for events nobody needs to read (task_started)."""
    fmt = FORMATS.get(event.get("kind", ""))
    if fmt is None:
        return None
    try:
        return fmt(event)
    except (KeyError, TypeError):
        return f"{event.get('kind')}: {event}"


def stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))
