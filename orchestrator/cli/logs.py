"""``pd logs``: worker, merger and coordinator logs, merged in time order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.errors import BadInput
from orchestrator.record.control import coordinator_alive
from orchestrator.record.store import RunStore


def logs(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the newest run).")] = None,
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
    files = _files(store, worker)
    shown = _select(_read(files), task)
    for line in shown[-lines:] if lines > 0 else shown:
        typer.echo(line)
    if follow:
        _follow(store, worker, task, {path: path.stat().st_size for path in _files(store, worker)})
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
    folder = store.dir / "logs"
    if worker is None:
        return sorted(p for p in folder.glob("*.log") if not p.name.startswith("gate-"))
    path = folder / f"{worker}.log"
    if not path.exists() and worker != "merger":
        known = ", ".join(
            sorted(p.stem for p in folder.glob("*.log") if not p.name.startswith("gate-"))
        )
        raise BadInput(
            "--worker",
            f"no log for worker '{worker}' in run {store.run_id}",
            f"use one of: {known}",
        )
    return [path]


def _read(files: list[Path]) -> list[str]:
    """All lines of all files, in time order (each line starts with HH:MM:SS)."""
    out: list[tuple[str, int, str]] = []
    for index, path in enumerate(files):
        try:
            out += [(line[:8], index, line) for line in path.read_text().splitlines()]
        except FileNotFoundError:
            continue
    return [line for _, _, line in sorted(out, key=lambda item: (item[0], item[1]))]


def _select(all_lines: list[str], task: str | None) -> list[str]:
    return [line for line in all_lines if task is None or f"[{task}]" in line]


def _follow(
    store: RunStore, worker: str | None, task: str | None, offsets: dict[Path, int]
) -> None:
    idle_rounds = 0
    while True:
        for path in _files(store, worker):
            start = offsets.get(path, 0)
            try:
                with open(path) as handle:
                    handle.seek(start)
                    chunk = handle.read()
            except FileNotFoundError:
                continue
            complete = chunk[: chunk.rfind("\n") + 1]
            offsets[path] = start + len(complete.encode())
            for line in _select(complete.splitlines(), task):
                typer.echo(line)
        idle_rounds = 0 if coordinator_alive(store) else idle_rounds + 1
        if idle_rounds > 2:
            return
        time.sleep(0.3)
