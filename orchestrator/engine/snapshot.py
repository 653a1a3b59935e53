"""What a run looks like to readers: the ``state.json`` snapshot of the coordinator.

Its cost follows what changed, not the graph: each task's JSON is cached until the task
changes (``TaskGraph.snapshot_json``), and a bigger graph is written less often
(``state_interval``), so the loop spends about the same share of its time on it at
3,000 tasks as at 30.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from orchestrator.engine.pool import WorkerHandle
from orchestrator.engine.runstate import MERGER, Slot
from orchestrator.system.sandbox import describe

if TYPE_CHECKING:
    from orchestrator.engine.coordinator import Coordinator


STATE_INTERVAL = 0.25  # seconds between snapshots of a graph of up to STATE_TASKS tasks
STATE_TASKS = 500


def state_interval(tasks: int) -> float:
    """Seconds between two snapshots: longer as the graph grows, so the bytes written per
    second (and the loop time spent on them) stay about the same."""
    return STATE_INTERVAL * max(1.0, tasks / STATE_TASKS)


def snapshot_text(
    run: Coordinator, status: str = "running", exit_code: int | None = None, hint: str = ""
) -> str:
    """``run_snapshot`` as JSON text, with the tasks spliced in from their cached JSON;
    ``hint``: what to do about a run that broke."""
    snapshot = run_snapshot(run, status, exit_code, tasks=False)
    head = json.dumps({**snapshot, "hint": hint} if hint else snapshot, default=str)
    return f'{head[:-1]}, "tasks": {run.state.graph.snapshot_json()}}}'


def run_snapshot(
    run: Coordinator, status: str = "running", exit_code: int | None = None, tasks: bool = True
) -> dict[str, Any]:
    """Everything ``pd status`` shows, and the pids (with start times) ``pd abort`` needs."""
    merger, state = run.pool.workers.get(MERGER), run.state
    return {
        "run_id": run.store.run_id,
        "mission": run.plan.mission.name,
        "status": status,
        "exit_code": exit_code,
        "abort_reason": state.abort_reason,
        "started_at": run.started_at,
        "updated_at": time.time(),
        "repo": str(run.plan.repo),
        "target_branch": run.plan.target_branch,
        "sandbox": describe(run.plan.sandbox),
        "start_head": run.plan.start_head,
        "head": state.head,
        "coordinator": {"pid": os.getpid(), "create_time": run.create_time},
        "merger": {
            "pid": merger.pid if merger else None,
            "create_time": merger.create_time if merger else None,
            **state.merges.view(),
        },
        "workers": [slot_view(s, run.pool.workers.get(s.id)) for s in state.slots.values()],
        **({"tasks": state.graph.snapshot()} if tasks else {}),
        "counts": state.graph.counts(),
        "critical_path": state.graph.critical_path(),
        **({"permits": view} if (view := run.metering.view()) is not None else {}),
        **({"planning": state.planning.view()} if state.planning is not None else {}),
    }


def slot_view(slot: Slot, handle: WorkerHandle | None) -> dict[str, Any]:
    return {
        "id": slot.id,
        "role": slot.role,
        "state": slot.state,
        "task": slot.task,
        "attempt": slot.attempt if slot.task else None,
        "job": slot.job if slot.task else None,
        "pid": handle.pid if handle else None,
        "create_time": handle.create_time if handle else None,
        "crashes": slot.crashes,
        "restarts": handle.restarts if handle else 0,
        "silent_for": round(time.monotonic() - handle.last_seen, 1) if handle else None,
    }
