"""``pd abort``: stop a whole run, one task or one worker.

An abort is the one command whose speed matters: it is typed when something goes
wrong. So this module imports neither Typer nor rich; ``orchestrator.cli.entry`` sends
``pd abort`` here directly, and the Typer app (for ``pd abort --help``) wraps ``stop``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.errors import BadInput, PdError
from orchestrator.record.control import (
    ControlRequest,
    await_answer,
    coordinator_alive,
    kill_recorded,
    send_request,
)
from orchestrator.record.store import RunStore

WAIT = 10.0  # seconds the coordinator gets to stop before its processes are killed


def stop(
    run: str | None,
    task: str | None = None,
    worker: str | None = None,
    wait: float = WAIT,
    say: Callable[[str], None] = print,
) -> int:
    """Ask the live coordinator to stop; clean up after a dead one."""
    if task and worker:
        raise BadInput("pd abort", "--task and --worker together", "give one of them")
    if wait <= 0:
        raise BadInput("pd abort", f"--wait {wait:g}", "give a number of seconds above 0", "--wait")
    store = RunStore.open(run)
    if not coordinator_alive(store):
        if task or worker:
            raise BadInput(
                store.run_id, "the run is not running", "resume it with `pd resume` first"
            )
        _clean_dead_run(store, say)
        return 0
    _check_target(store, task, worker)
    sent = send_request(store, ControlRequest("abort", task=task, worker=worker))
    if task or worker:
        refused = await_answer(store, sent)
        if refused is not None:
            raise BadInput(store.run_id, refused, "check `pd status` for its tasks and workers")
        say(f"run {store.run_id} stopped {'task ' + task if task else worker}")
        return 0
    deadline = time.monotonic() + wait
    while coordinator_alive(store) and time.monotonic() < deadline:
        time.sleep(0.01)
    if coordinator_alive(store):
        say("the coordinator did not stop in time: killing its processes")
        _clean_dead_run(store, say)
    else:
        say(f"run {store.run_id} aborted")
    return 0


def _check_target(store: RunStore, task: str | None, worker: str | None) -> None:
    """A task or worker the live run does not have is bad input, not a silent no-op."""
    state = store.read_state() or {}
    if task and task not in {t["id"] for t in state.get("tasks", [])}:
        known = ", ".join(t["id"] for t in state.get("tasks", [])) or "none yet"
        raise BadInput(store.run_id, f"no task {task!r} in this run", f"one of: {known}", "--task")
    if worker and worker not in {w["id"] for w in state.get("workers", [])}:
        known = ", ".join(w["id"] for w in state.get("workers", [])) or "none yet"
        fix = f"one of: {known}"
        raise BadInput(store.run_id, f"no worker {worker!r} in this run", fix, "--worker")


def _clean_dead_run(store: RunStore, say: Callable[[str], None]) -> None:
    """No coordinator: kill what it left (same PID and start time only), drop worktrees."""
    from orchestrator.system.worktrees import WorktreeManager

    state = store.read_state() or {}
    killed = kill_recorded(state)
    if state.get("repo"):
        plan = store.read_json("plan.json") if (store.dir / "plan.json").exists() else {}
        if plan.get("worktrees"):
            WorktreeManager(Path(state["repo"]), Path(plan["worktrees"])).remove_all()
    if state.get("status") == "running":
        state["status"] = "aborted"
        store.write_state(state)
    say(f"run {store.run_id} is not running; cleaned up {len(killed)} processes and its worktrees")


def main(argv: list[str]) -> int:
    """``pd abort`` without the Typer app: the same options, the same errors."""
    parser = argparse.ArgumentParser(prog="pd abort", add_help=False)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--task")
    parser.add_argument("--worker")
    parser.add_argument("--wait", type=float, default=WAIT)
    try:
        args = parser.parse_args(argv)
        return stop(args.run, args.task, args.worker, args.wait)
    except PdError as exc:
        print(f"pd: error: {exc}", file=sys.stderr)
        return exc.exit_code
