"""Rebuild a run's task graph from its event log, so ``pd resume`` goes on where it was.

Merged work is never redone: a task counts as merged if its merge was recorded, or if
its submitted commit is already in the target branch (the coordinator died between the
merger moving the branch and the event being written).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput
from orchestrator.planning.taskplan import PlanProblem, parse_plan, team_of
from orchestrator.record import events as ev
from orchestrator.system.gitutil import is_ancestor
from orchestrator.tasks.taskgraph import LANDED, TaskGraph, TaskState
from orchestrator.tasks.transitions import replay

if TYPE_CHECKING:
    from orchestrator.engine.preflight import RunPlan


def rebuild(graph: TaskGraph, events: Iterable[ev.Event], repo: Path, head: str) -> int:
    """Replay ``events`` through the task graph's one state machine
    (``transitions.replay``); returns how many tasks landed.

    Then one fact the log cannot hold: a version that waited for review or the merger
    and whose commit is in the target already landed (the coordinator died between the
    merger moving the branch and the event being written); it counts as merged, and
    the coordinator records it (``task_merged`` with ``recovered``).
    """
    replay(graph, events)
    for node in graph:
        waiting = node.state in (TaskState.REVIEWING, TaskState.MERGING)
        if waiting and node.commit and is_ancestor(repo, node.commit, head):
            graph.merged(node.id, node.commit)
    graph.settle()
    return sum(1 for t in graph if t.state in LANDED)


def unrecorded_merges(graph: TaskGraph, events: Iterable[ev.Event], head: str) -> list[ev.Event]:
    """The merges ``rebuild`` found in the target that the log does not hold, as the
    ``task_merged`` events (``recovered``) to record before anything else happens: so the
    record agrees with the target even when nothing is left to run."""
    recorded = {e.task for e in events if isinstance(e, ev.TaskMerged)}
    return [
        ev.TaskMerged(
            task=t.id, attempt=t.attempts, head=head, commit=t.commit or "", recovered=True
        )
        for t in graph
        if t.state is TaskState.MERGED and t.id not in recorded
    ]


def restore_plan(plan: RunPlan, events: Iterable[ev.Event]) -> bool:
    """Bring a planning run's step back from its event log (``pd resume``). A recorded
    plan becomes the graph; otherwise the failed attempts count. True if it was accepted."""
    step = plan.planning
    if step is None:
        return False
    accepted: ev.PlanAccepted | None = None
    for event in events:
        if isinstance(event, ev.PlanAttemptFailed):
            step.attempts = event.attempt
            step.failed(event.reason)
        elif isinstance(event, ev.PlanAccepted):
            accepted = event
    if accepted is None:
        return False
    team = team_of(plan.workers, plan.roles)
    try:
        specs, _ = parse_plan(accepted.tasks, team, plan.mission.max_attempts)
        plan.graph = TaskGraph.for_mission(plan.mission, specs)
    except PlanProblem as exc:
        raise BadInput(
            str(plan.mission_path),
            f"the run's recorded plan no longer fits the mission ({exc})",
            "restore the team the run was planned for",
            "team",
        ) from None
    step.attempts = accepted.attempt
    step.accepted(len(plan.graph), accepted.summary)
    return True
