"""Rebuild a run's task graph from its event log, so ``pd resume`` goes on where it was.

Merged work is never redone: a task counts as merged if its merge was recorded, or if
its submitted commit is already in the target branch (the coordinator died between the
merger moving the branch and the event being written).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import BadInput
from orchestrator.planning.taskplan import PlanProblem, parse_plan, team_of
from orchestrator.record import events as ev
from orchestrator.system.gitutil import is_ancestor
from orchestrator.tasks.taskgraph import LANDED, TaskGraph, TaskState

if TYPE_CHECKING:
    from orchestrator.engine.preflight import RunPlan


def rebuild(graph: TaskGraph, events: Iterable[ev.Event], repo: Path, head: str) -> int:
    """Restore every task's state from ``events``; returns how many tasks were merged.

    Review: a version that was in review is reviewed again (the job is lost with the
    coordinator); one whose approval was recorded goes to the merge queue; requested
    changes, rounds and the reviewed commit to build on are kept.
    """
    record = {t.id: _Entry() for t in graph}
    for event in events:
        entry = record.get(getattr(event, "task", None) or "")
        if entry is not None:
            entry.apply(event)
    for task_id, entry in record.items():
        if (
            entry.state in (TaskState.PENDING, TaskState.REVIEWING, TaskState.MERGING)
            and entry.submitted
            and is_ancestor(repo, entry.submitted, head)
        ):
            entry.state, entry.commit = TaskState.MERGED, entry.submitted
        graph.restore(
            task_id,
            entry.state,
            entry.attempts,
            commit=entry.commit,
            feedback=entry.feedback,
            handoff=entry.handoff,
            **entry.review_fields(),
        )
    graph.settle()
    return sum(1 for e in record.values() if e.state in LANDED)


@dataclass
class _Entry:
    """One task as its events left it."""

    state: TaskState = TaskState.PENDING
    attempts: int = 0
    feedback: list[str] = field(default_factory=list)
    handoff: str = ""
    commit: str | None = None
    submitted: str | None = None  # the latest submitted commit not yet sent back
    version: ev.TaskSubmitted | None = None  # that submission's event
    reviews: int = 0
    review_rounds: int = 0
    verdict: str = ""
    start_from: str | None = None
    handoffs: int = 0  # attempts handed off on request: not failures
    infra_failures: int = 0  # attempts pd's machinery broke: not failures

    def apply(self, event: ev.Event) -> None:
        match event:
            case ev.TaskSubmitted():
                self.submitted, self.version = event.commit, event
                if event.state == TaskState.REVIEWING:
                    self._in_version(TaskState.REVIEWING)
            case ev.ReviewDone():
                self.reviews, self.verdict = event.round, event.verdict
                if event.state == TaskState.MERGING:
                    self._in_version(TaskState.MERGING)
                else:
                    self.state, self.submitted = TaskState.PENDING, None
                    self.attempts = max(self.attempts, self._version_attempt())
                    self.review_rounds += 1
                    self.feedback.append(event.feedback)
                    self.start_from = event.commit
            case ev.ReviewRoundsExhausted():
                self._in_version(TaskState.MERGING)
            case ev.ReviewFailed(state=TaskState.FAILED):
                self.state = TaskState.FAILED
                self.feedback.append(event.reason)
            case ev.TaskMerged():
                self.state, self.commit = TaskState.MERGED, event.head
            case ev.TaskAlreadyMerged():
                self.state, self.commit = TaskState.ALREADY_MERGED, event.commit
            case ev.TaskRejected():
                self.start_from = None  # the next attempt starts over from the target
            case ev.AttemptHandedOff():
                self.attempts, self.handoffs = event.attempt, self.handoffs + 1
                self.handoff, self.start_from = event.handoff, event.commit
            case ev.AttemptInfraFailed():
                self.attempts, self.infra_failures = event.attempt, self.infra_failures + 1
                if event.state == TaskState.FAILED:
                    self.state = TaskState.FAILED
                    self.feedback.append(event.reason)
                elif event.state == TaskState.PENDING:
                    self.state = TaskState.PENDING
                # merging: the version still waits for its merge
            case ev.AttemptFailed():
                self.attempts = event.attempt
                self.feedback.append(event.reason)
                self.handoff = event.handoff
                self.submitted = None
                failed = event.state == TaskState.FAILED
                self.state = TaskState.FAILED if failed else TaskState.PENDING
            case ev.TaskAborted():
                self.state = TaskState.ABORTED

    def _version_attempt(self) -> int:
        return self.version.attempt if self.version is not None else 0

    def _in_version(self, state: TaskState) -> None:
        """The latest submitted version is in review or waits for the merger."""
        self.state, self.commit = state, self.submitted
        self.attempts = max(self.attempts, self._version_attempt())

    def review_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "reviews": self.reviews,
            "review_rounds": self.review_rounds,
            "verdict": self.verdict,
            "start_from": self.start_from,
            "handoffs": self.handoffs,
            "infra_failures": self.infra_failures,
        }
        if self.state in (TaskState.REVIEWING, TaskState.MERGING) and self.version is not None:
            fields.update(
                branch=self.version.branch,
                summary=self.version.summary,
                worker=self.version.worker,  # the implementer never reviews it
            )
        return fields


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
