"""One line of human text per event, shared by live progress, logs and reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from orchestrator.record import events as ev


def _short(sha: str | None) -> str:
    return (sha or "")[:10]


def _first_line(text: str | None, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


FORMATS: dict[type[ev.Event], Callable[[Any], str | None]] = {
    ev.RunStarted: lambda e: (
        f"run started: mission {e.mission} on {e.target_branch} "
        f"at {_short(e.head)} with {len(e.workers)} workers"
    ),
    ev.WorkerSpawned: lambda e: f"{e.worker} spawned ({e.role})",
    ev.WorkerReady: lambda e: f"{e.worker} ready (pid {e.pid})",
    ev.WorkerCrashed: lambda e: (
        f"{e.worker} died (exit code {e.exitcode})" + (f" during {e.task}" if e.task else "")
    ),
    ev.WorkerRespawned: lambda e: f"{e.worker} respawned (pid {e.pid})",
    ev.WorkerRetired: lambda e: f"{e.worker} retired",
    ev.WorkerFailedToStart: lambda e: f"{e.worker} failed to start: {e.error}",
    ev.HeartbeatMissed: lambda e: f"{e.worker} silent for {e.seconds}s: killing it",
    ev.TaskAssigned: lambda e: f"{e.worker} ▶ {e.task} (attempt {e.attempt})",
    ev.TaskSubmitted: lambda e: (
        f"{e.worker} ✓ {e.task} done: {len(e.files)} files at {_short(e.commit)}"
    ),
    ev.BatchStarted: lambda e: (
        f"merge ⇢ batch {e.batch}: {', '.join(e.commits)}" + (f" (on batch {e.on})" if e.on else "")
    ),
    ev.MergeStarted: lambda e: f"merge ⇢ {e.task}" + (f" (on batch {e.on})" if e.on else ""),
    ev.MergeRestarted: lambda e: f"merge queue restarted: {e.reason}",
    ev.TaskMerged: lambda e: f"merge ✓ {e.task} → {_short(e.head)} ({e.seconds}s)",
    ev.TaskRejected: lambda e: f"merge ✗ {e.task}: {e.reason}",
    ev.GateFlaky: lambda e: (
        f"flaky gate (failed, then passed on the same tree) for {', '.join(e.tasks)}"
        + (f": {', '.join(e.tests)}" if e.tests else "")
    ),
    ev.TaskAlreadyMerged: lambda e: (
        f"{e.task} changed nothing: already in the target at {_short(e.commit)}"
    ),
    ev.AttemptFailed: lambda e: (
        f"{e.task} attempt {e.attempt} failed: {_first_line(e.reason)} → {e.state}"
    ),
    ev.AttemptInfraFailed: lambda e: (
        f"{e.task} attempt {e.attempt} broke on pd's side, retried without charge: "
        f"{_first_line(e.reason)} → {e.state}"
    ),
    ev.TaskFailed: lambda e: (
        f"{e.task} failed after {e.attempts} attempts"
        + (f"; blocked: {', '.join(e.blocked)}" if e.blocked else "")
    ),
    ev.TaskAborted: lambda e: f"{e.task} aborted",
    ev.HandoffRequested: lambda e: f"{e.worker} asked to hand off {e.task}",
    ev.HandoffRefused: lambda e: f"no handoff for {e.worker}: {e.reason}",
    ev.AttemptHandedOff: lambda e: (
        f"{e.task} attempt {e.attempt} handed off by {e.worker}: work in progress at "
        f"{_short(e.commit)}; a fresh start goes on from it"
    ),
    ev.PlanAssigned: lambda e: f"{e.worker} ▶ planning the goal (attempt {e.attempt})",
    ev.PlanAccepted: lambda e: (
        f"{e.worker} ✓ plan accepted: {len(e.tasks)} tasks; critical path "
        + " → ".join(e.critical_path)
    ),
    ev.PlanAttemptFailed: lambda e: (
        f"planning attempt {e.attempt} failed: {_first_line(e.reason)} → {e.state}"
    ),
    ev.ReviewStarted: lambda e: (
        f"{e.worker} ▶ review of {e.task} (round {e.round}) at {_short(e.commit)}"
    ),
    ev.ReviewDone: lambda e: (
        f"{e.worker} review of {e.task} round {e.round}: "
        + ("approved" if e.verdict == "approve" else "changes requested")
        + (f": {_first_line(e.comments)}" if e.comments else "")
    ),
    ev.ReviewFailed: lambda e: (
        f"review of {e.task} round {e.round} failed ({e.failures}): "
        f"{_first_line(e.reason)} → {e.state}"
    ),
    ev.ReviewRoundsExhausted: lambda e: (
        f"{e.task}: {e.rounds} review rounds asked for changes; this version goes "
        "to the merge queue unreviewed (the gate still decides)"
    ),
    ev.MergerFailedToStart: lambda e: f"merger failed to start: {e.error}",
    ev.MergerCrashed: lambda e: f"merger died (exit code {e.exitcode}): restarting",
    ev.ControlReceived: lambda e: (
        f"request: {e.action}"
        + (f" task {e.task}" if e.task else "")
        + (f" worker {e.worker}" if e.worker else "")
    ),
    ev.ControlRefused: lambda e: f"request refused: {e.action or '?'}: {e.reason}",
    ev.RunAborted: lambda e: f"run aborted: {e.reason}",
    ev.RunStalled: lambda e: f"run stalled: {e.reason}",
    ev.RunFinished: lambda e: f"run {e.status} (exit code {e.exit_code}) at {_short(e.head)}",
    ev.BudgetExhausted: lambda e: f"{e.reason}: no new calls; finished work still merges",
    ev.RunHalting: lambda e: f"stopping: {e.reason}",
    ev.RunStopped: lambda e: (
        f"run stopped: {e.reason}" + (f"; not run: {', '.join(e.tasks)}" if e.tasks else "")
    ),
    ev.CallFailed: lambda e: (
        f"{e.worker} model call failed ({e.status}): "
        f"{_first_line(e.error)}"
        + (f"; everyone waits {e.retry_after:.1f}s" if e.retry_after else "")
    ),
    # Only a lost call's usage is worth a line: the others are summed by ``pd report``.
    ev.UsageRecorded: lambda e: (
        f"{e.worker} died mid-call on {e.task}: lost call, charged at reservation (${e.cost})"
        if e.lost
        else None
    ),
    ev.BudgetOverrun: lambda e: (
        f"{e.worker}: the provider billed ${e.amount} more than reserved on {e.task}; "
        "later calls of that model reserve more"
    ),
    ev.CassetteRecorded: lambda e: f"recorded every model exchange in {e.path}",
    ev.Progress: lambda e: f"{e.worker}   {e.task}: {e.text}",
}


def format_event(event: ev.Event) -> str | None:
    """The event as one line, or None for events nobody needs to read (task_started)
    and for kinds this version does not know."""
    fmt = FORMATS.get(type(event))
    return None if fmt is None else fmt(event)


_last_stamp: tuple[int, str] = (-1, "")


def stamp(at: float) -> str:
    """``HH:MM:SS`` local time: formatted once per second (a log line per event)."""
    global _last_stamp
    second = int(at)
    if _last_stamp[0] != second:
        _last_stamp = (second, time.strftime("%H:%M:%S", time.localtime(second)))
    return _last_stamp[1]


def log_line(event: ev.Event) -> str | None:
    """The event as the coordinator's line in ``pd logs`` (``HH:MM:SS [coordinator]
    [task] text``), or None for the silent kinds. Rendered from the event log when read:
    the run writes each event once, not once more as text."""
    line = format_event(event)
    if line is None:
        return None
    return f"{stamp(event.at)} [coordinator] [{getattr(event, 'task', None) or '-'}] {line}"
