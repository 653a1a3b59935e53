"""``pd abort``: stop a whole run, one task or one worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import console
from orchestrator.control import ControlRequest, coordinator_alive, kill_recorded, send_request
from orchestrator.errors import BadInput
from orchestrator.store import RunStore


def abort(
    run: Annotated[str | None, typer.Argument(help="Run id (default: the newest run).")] = None,
    task: Annotated[str | None, typer.Option(help="Abort only this task.")] = None,
    worker: Annotated[str | None, typer.Option(help="Stop only this worker.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the coordinator.")] = 10.0,
) -> int:
    """Ask the live coordinator to stop; clean up after a dead one."""
    if task and worker:
        raise BadInput("pd abort", "--task and --worker together", "give one of them")
    store = RunStore.open(run)
    if not coordinator_alive(store):
        if task or worker:
            raise BadInput(
                store.run_id, "the run is not running", "resume it with `pd resume` first"
            )
        _clean_dead_run(store)
        return 0
    send_request(store, ControlRequest("abort", task=task, worker=worker))
    if task or worker:
        console.print(f"asked run {store.run_id} to stop {'task ' + task if task else worker}")
        return 0
    deadline = time.monotonic() + wait
    while coordinator_alive(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    if coordinator_alive(store):
        console.print("the coordinator did not stop in time: killing its processes")
        _clean_dead_run(store)
    else:
        console.print(f"run {store.run_id} aborted")
    return 0


def _clean_dead_run(store: RunStore) -> None:
    """No coordinator: kill what it left (same PID and start time only), drop worktrees."""
    from orchestrator.worktree import WorktreeManager

    state = store.read_state() or {}
    killed = kill_recorded(state)
    if state.get("repo"):
        plan = store.read_json("plan.json") if (store.dir / "plan.json").exists() else {}
        if plan.get("worktrees"):
            WorktreeManager(Path(state["repo"]), Path(plan["worktrees"])).remove_all()
    if state.get("status") == "running":
        state["status"] = "aborted"
        store.write_state(state)
    console.print(
        f"run {store.run_id} is not running; cleaned up {len(killed)} processes and its worktrees"
    )
