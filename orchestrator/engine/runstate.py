"""The run state: everything the coordinator decides with, in one object.

The step functions (``engine.steps``) are the only code that changes it, and they do no
I/O: what they decide comes back as effects for the coordinator's shell to carry out.
So a test builds a ``RunState`` in memory, feeds it inputs, and reads the effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.engine.mergequeue import MergeQueue
from orchestrator.planning.taskplan import PlanningStep
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.team.roles import Role

MERGER = "merger"  # the merger's id among the pool's processes


class SlotState(StrEnum):
    """Where a worker slot is; the values are what state.json shows."""

    BOOTING = "booting"  # spawned (or respawned), not Ready yet
    IDLE = "idle"
    BUSY = "busy"  # holds a job
    RETIRED = "retired"  # crashed too often, failed to start, or stopped for good
    STOPPED = "stopped"  # the run ended


class SlotJob(StrEnum):
    """What a busy slot's job is (state.json ``job``)."""

    TASK = "task"  # a task attempt or the planning attempt
    REVIEW = "review"


@dataclass
class Slot:
    """The coordinator's view of one worker."""

    id: str
    role: str
    state: SlotState = SlotState.BOOTING
    task: str | None = None
    attempt: int = 0  # of its task; of the review round when ``job`` is REVIEW
    crashes: int = 0
    job: SlotJob = SlotJob.TASK


class RunStatus(StrEnum):
    """Whether the run may start new work. Every way a run stops passes through here."""

    RUNNING = "running"
    # A limit was reached (budget spent, provider refused): nothing new starts; what
    # runs, reviews and merges finishes.
    STOPPING = "stopping"
    # Aborted by the user or a signal, or broken (the merger could not start): the run
    # ends now and throws away what is in flight.
    ABORTING = "aborting"


def _no_note(task_id: str, attempt: int) -> str:
    return ""


@dataclass(frozen=True)
class RunRules:
    """What a run's decisions depend on that never changes during the run."""

    run_id: str
    mission: Any  # spec.mission.Mission: limits, context files, attempts, defaults
    roles: Mapping[str, Role]
    workers: list[tuple[str, str]]  # (worker id, role id)
    gate_command: str = ""
    target_branch: str = "main"
    escalation: bool = False  # a stronger model exists for a task's last attempts
    gate_parallel: int = 1  # gates at once (the mission's gate.parallel, or the default)
    # The handoff note a worker kept current during an attempt it could not finish
    # (a read of the run store; the shell supplies it).
    running_note: Callable[[str, int], str] = _no_note


@dataclass
class RunState:
    """The graph, the slots, the target head, the merge queue and the run's status."""

    rules: RunRules
    graph: TaskGraph
    head: str
    planning: PlanningStep | None = None  # a goal mission: the graph comes from the producer
    plan_payload: dict[str, Any] | None = None  # what a PlanJob carries, besides its attempt
    slots: dict[str, Slot] = field(default_factory=dict)
    merges: MergeQueue = field(init=False)  # sized by the mission's gate settings
    status: RunStatus = RunStatus.RUNNING
    reason: str | None = None  # why it is stopping or aborting
    review_tried: dict[str, set[str]] = field(default_factory=dict)  # reviewers that failed
    assigned_at: dict[str, float] = field(default_factory=dict)  # job sent, for dispatch time
    session: list[str] = field(default_factory=list)  # one line per landed task

    def __post_init__(self) -> None:
        gate = self.rules.mission.gate
        self.merges = MergeQueue(gate.retries, gate.max_batch, self.rules.gate_parallel)
        if not self.slots:
            self.slots = {wid: Slot(wid, role) for wid, role in self.rules.workers}

    @property
    def aborting(self) -> bool:
        return self.status is RunStatus.ABORTING

    @property
    def abort_reason(self) -> str | None:
        return self.reason if self.aborting else None

    @property
    def halted(self) -> str | None:
        """Why the run is stopping (a limit was reached), if it is."""
        return self.reason if self.status is RunStatus.STOPPING else None

    def abort(self, reason: str) -> None:
        """Stop now; the latest reason is the one reported."""
        self.status, self.reason = RunStatus.ABORTING, reason

    def stop(self, reason: str) -> None:
        """No new work; what runs finishes. An abort stays an abort."""
        if self.status is RunStatus.RUNNING:
            self.status, self.reason = RunStatus.STOPPING, reason

    @property
    def planning_open(self) -> bool:
        """No task exists yet: the goal is still being planned."""
        return self.planning is not None and self.planning.open

    @property
    def unplanned(self) -> bool:
        return self.planning is not None and self.planning.state != "accepted"

    def live_slots(self) -> list[Slot]:
        return [s for s in self.slots.values() if s.state != SlotState.RETIRED]
