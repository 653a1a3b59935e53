"""The typed messages that cross process boundaries.

Each message is a small dataclass that serialises to one JSON object with a ``type``
field, so the same protocol could run over another transport and every message can be
logged as it is. Pipes carry the JSON bytes, never pickles.

This module holds the jobs the coordinator sends workers and what workers answer, and
is where every message is imported from: the base (``wire.base``), the merger's
(``wire.merging``) and the permit desk's (``wire.permits``) are re-exported here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from orchestrator.wire.base import Message, from_bytes, from_dict
from orchestrator.wire.merging import (
    BatchResult,
    CancelRun,
    LandRun,
    MergeBatch,
    MergeRequest,
    MergeResult,
    RunLanded,
)
from orchestrator.wire.permits import (
    AcquireTokens,
    CallDone,
    CallSent,
    Deny,
    Grant,
    UsageReport,
)

# ---- coordinator -> worker -------------------------------------------------------


@dataclass
class TaskJob(Message):
    """Run one attempt of a task, starting from ``target_head`` on branch ``branch``."""

    task_id: str
    attempt: int
    title: str
    description: str
    branch: str
    target_head: str
    files: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    handoff: str = ""
    dependencies: dict[str, str] = field(default_factory=dict)
    # Start from this commit (earlier work of the task: a reviewed version to fix, or the
    # work in progress a handoff committed) instead of ``target_head``.
    start_from: str = ""
    escalate: bool = False  # use the run's top-tier model (critical task, repeated failure)
    context_files: list[str] = field(default_factory=list)  # read from the worktree
    session: list[str] = field(default_factory=list)  # the run's session log so far


@dataclass
class PlanJob(Message):
    """Turn the mission's goal into a task graph, reading the repository at
    ``target_head``. The fields after ``feedback`` are the planner's brief
    (``brief()``), as ``preflight.plan_payload`` builds it."""

    task_id: str
    attempt: int
    branch: str
    target_head: str
    feedback: list[str] = field(default_factory=list)
    mission: str = ""
    goal: str = ""
    description: str = ""
    team: list[dict[str, Any]] = field(default_factory=list)  # planning.taskplan.TeamRole
    draft: list[dict[str, Any]] = field(default_factory=list)  # mission task dicts
    max_attempts: int = 3
    gate: str | None = None
    skills: list[str] = field(default_factory=list)
    workspace: str = ""

    BRIEF: ClassVar[tuple[str, ...]] = (
        "mission",
        "goal",
        "description",
        "team",
        "draft",
        "max_attempts",
        "gate",
        "skills",
        "workspace",
    )

    def brief(self) -> dict[str, Any]:
        """What the planner reads (the same brief ``pd plan`` builds without a job)."""
        return {name: getattr(self, name) for name in self.BRIEF}


@dataclass
class ReviewJob(Message):
    """Judge task ``task_id``'s submitted ``commit`` (review round ``attempt``); the diff
    is ``base...commit``, the task's work only."""

    task_id: str
    attempt: int
    commit: str
    base: str
    title: str
    description: str = ""
    summary: str = ""  # the implementer's
    rounds_used: int = 0
    max_rounds: int = 0
    previous_comments: str = ""  # what the last round asked for, to check
    skills: list[str] = field(default_factory=list)  # the reviewer role's
    test_command: str | None = None


Job = TaskJob | PlanJob | ReviewJob


@dataclass
class HandOff(Message):
    """Stop the attempt of ``task_id`` at the next safe point, commit what it has, and
    report a handoff note for a fresh start."""

    task_id: str


@dataclass
class AbortTask(Message):
    """Stop the current attempt of ``task_id`` at the next safe point."""

    task_id: str
    reason: str = "aborted by user"


@dataclass
class Shutdown(Message):
    """Finish nothing more, clean up, exit."""

    reason: str = "run ended"


# ---- worker -> coordinator -------------------------------------------------------


@dataclass
class Ready(Message):
    """Sent once after boot (also when boot failed: then ``error`` says why)."""

    worker_id: str
    pid: int
    error: str = ""


@dataclass
class Heartbeat(Message):
    """Sent from a background thread, so a long model call never looks like a hang."""

    worker_id: str
    at: float = field(default_factory=time.time)


@dataclass
class TaskStarted(Message):
    worker_id: str
    task_id: str
    attempt: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class Progress(Message):
    """One line of what a worker is doing, for logs and live progress."""

    worker_id: str
    task_id: str
    text: str


@dataclass
class TaskDone(Message):
    """The agent finished; its work is committed on ``branch`` at ``commit``."""

    worker_id: str
    task_id: str
    attempt: int
    branch: str
    commit: str
    summary: str
    changed_files: list[str] = field(default_factory=list)
    skills: dict[str, list[str]] = field(default_factory=dict)  # offered, used
    # No change of its own: the agent named ``commit``, already in the target, as the one
    # holding the work (checked by the worker).
    already_merged: bool = False


@dataclass
class TaskFailed(Message):
    """The attempt ended without work to merge; ``handoff`` is for the next attempt."""

    worker_id: str
    task_id: str
    attempt: int
    reason: str
    handoff: str = ""
    skills: dict[str, list[str]] = field(default_factory=dict)  # offered, used
    # pd's machinery failed (InfraError), not the agent: retried, not an attempt.
    infrastructure: bool = False


@dataclass
class HandedOff(Message):
    """The attempt stopped on request (``pd handoff``): not a failure. Its work in
    progress is committed at ``start_from``; the next attempt goes on from there,
    briefed by ``handoff``."""

    worker_id: str
    task_id: str
    attempt: int
    start_from: str
    handoff: str
    skills: dict[str, list[str]] = field(default_factory=dict)  # offered, used


@dataclass
class PlanDone(Message):
    """A planning attempt's accepted plan: ``tasks`` as mission task dicts."""

    worker_id: str
    task_id: str
    attempt: int
    tasks: list[dict[str, Any]]
    summary: str = ""
    skills: dict[str, list[str]] = field(default_factory=dict)  # offered, used


@dataclass
class ReviewDone(Message):
    """A review attempt's verdict on ``task_id``'s submitted commit; ``attempt`` is the
    review round. ``comments`` go back to the implementer when changes are requested."""

    worker_id: str
    task_id: str
    attempt: int
    approved: bool
    comments: str
    summary: str = ""
    skills: dict[str, list[str]] = field(default_factory=dict)  # offered, used


__all__ = [
    "AbortTask",
    "AcquireTokens",
    "BatchResult",
    "CallDone",
    "CallSent",
    "CancelRun",
    "Deny",
    "Grant",
    "HandOff",
    "HandedOff",
    "Heartbeat",
    "LandRun",
    "MergeBatch",
    "MergeRequest",
    "MergeResult",
    "Message",
    "PlanDone",
    "PlanJob",
    "Progress",
    "Ready",
    "ReviewDone",
    "ReviewJob",
    "RunLanded",
    "Shutdown",
    "TaskDone",
    "TaskFailed",
    "TaskJob",
    "TaskStarted",
    "UsageReport",
    "from_bytes",
    "from_dict",
]
