"""``pd logs``: worker, merger and coordinator logs, merged in the order they were written
(each line's time: ``record.processlog``).

The coordinator's lines are the run's events (``events.jsonl``) as text
(``eventtext.log_line``): the run records each event once. A run an older pd wrote has a
``logs/coordinator.log`` of its own instead, read like the others.
"""

from __future__ import annotations

import time
from operator import itemgetter
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import RUN
from orchestrator.errors import BadInput
from orchestrator.record import processlog
from orchestrator.record.control import coordinator_alive
from orchestrator.record.eventtext import log_line
from orchestrator.record.store import RunStore

COORDINATOR = "coordinator"


def logs(
    run: RUN = None,
    worker: Annotated[str | None, typer.Option(help="Only this worker (w1, merger …).")] = None,
    task: Annotated[str | None, typer.Option(help="Only lines about this task.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Show the last N lines.")] = 200,
) -> int:
    """Print a run's logs; --follow keeps going while the run lives."""
    if lines < 0:
        raise BadInput("--lines", f"{lines} is not a line count", "give 0 or more (0: every line)")
    store = RunStore.open(run)
    if task is not None:
        _check_task(store, task)
    start = _started(store)
    offsets: dict[Path, int] = {}
    shown = _select(_read(store, _files(store, worker), offsets, start), task)
    for line in shown[-lines:] if lines > 0 else shown:
        typer.echo(line)
    if follow:  # on from where each file was read: a line written meanwhile is not lost
        _follow(store, worker, task, offsets, start)
    return 0


def _check_task(store: RunStore, task: str) -> None:
    """A filter for a task the run never had would print nothing, silently."""
    known = _task_ids(store)
    if known is None or task in known:  # None: a live run still planning its tasks
        return
    raise BadInput(
        "--task",
        f"no task '{task}' in run {store.run_id}",
        f"use one of: {', '.join(known) or '(none yet)'}",
    )


def _task_ids(store: RunStore) -> list[str] | None:
    """Every task id the run knows (mission, snapshot, events); None while a live run
    may still add tasks (its goal is being planned)."""
    try:
        mission = store.read_json("mission.json")
    except (FileNotFoundError, ValueError):
        mission = {}
    ids = [t.get("id") for t in mission.get("tasks", [])]
    ids += [t.get("id") for t in (store.read_state() or {}).get("tasks", [])]
    ids += [getattr(e, "task", None) for e in store.events()]
    planned = mission.get("plan")
    if planned is None:
        planned = bool(mission.get("goal") and not mission.get("tasks"))
    if planned:
        from orchestrator.planning.taskplan import PLAN_ID

        if coordinator_alive(store):
            return None
        ids.append(PLAN_ID)
    return sorted({i for i in ids if isinstance(i, str) and i})


def _files(store: RunStore, worker: str | None) -> list[Path]:
    """The logs to read: each process's, the event log standing for the coordinator's."""
    folder = store.dir / "logs"
    logs = {p.stem: p for p in folder.glob("*.log") if not p.name.startswith("gate-")}
    logs.setdefault(COORDINATOR, store.events_path)
    if worker is None:
        return [logs[name] for name in sorted(logs)]
    if worker not in logs and worker != "merger":
        raise BadInput(
            "--worker",
            f"no log for worker '{worker}' in run {store.run_id}",
            f"use one of: {', '.join(sorted(logs))}",
        )
    return [logs.get(worker, folder / f"{worker}.log")]


def _read(store: RunStore, files: list[Path], offsets: dict[Path, int], start: float) -> list[str]:
    """The complete lines written to ``files`` since ``offsets`` (moved on past them), in
    the order they were written: a stable sort, so the lines of one instant keep their
    file's order, and a line's continuation stays with it."""
    timed: list[tuple[float, str]] = []
    for path in files:
        lines, offsets[path] = _lines_after(store, path, offsets.get(path, 0), start)
        timed += lines
    return [line for _, line in sorted(timed, key=itemgetter(0))]


def _started(store: RunStore) -> float:
    """When the run began (its first event), which dates a log line of the time alone."""
    first = next(store.raw_events(), None)
    return float(first["at"]) if first else store.events_path.parent.stat().st_mtime


def _lines_after(
    store: RunStore, path: Path, offset: int, start: float
) -> tuple[list[tuple[float, str]], int]:
    """The complete lines of one log from byte ``offset`` on, each with when it was
    written (``start``: no later than the first), and the offset after them."""
    if path == store.events_path:
        events, offset = store.events_after(offset)
        return [(e.at, line) for e in events if (line := log_line(e)) is not None], offset
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    complete = chunk[: chunk.rfind(b"\n") + 1]
    lines = complete.decode(errors="replace").splitlines()
    return processlog.timed(lines, start), offset + len(complete)


def _select(all_lines: list[str], task: str | None) -> list[str]:
    return [line for line in all_lines if task is None or f"[{task}]" in line]


def _follow(
    store: RunStore, worker: str | None, task: str | None, offsets: dict[Path, int], start: float
) -> None:
    idle_rounds = 0
    while True:
        for line in _select(_read(store, _files(store, worker), offsets, start), task):
            typer.echo(line)
        idle_rounds = 0 if coordinator_alive(store) else idle_rounds + 1
        if idle_rounds > 2:
            return
        time.sleep(0.3)
