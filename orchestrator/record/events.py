"""Every event a run records, one typed record per kind: the run's contract.

The coordinator appends events to ``events.jsonl`` (``RunStore.append``) before it acts
on them; ``pd resume`` replays them through the task graph; ``pd status``, ``pd report``,
``pd logs``, the permit desk's replay and, later, the dashboard and remote workers read
the same types. Nothing else names an event kind by a string.

Each line carries its kind and the schema version it was written with (``v``). A reader
decodes a line with ``decode``: a kind this version does not know (written by a newer
pd) comes back as ``Unknown``, which every reader skips and nobody drops; a field this
version does not know is ignored, and a field a line lacks takes its default. So old
logs stay readable and a newer log never crashes an older reader.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from orchestrator.record.eventbase import KINDS, VERSION, E, Event, Unknown, decode, kind

__all__ = ["KINDS", "VERSION", "E", "Event", "Unknown", "decode", "kind"]  # and every kind


# ---- the run ----------------------------------------------------------------------


@kind("run_started")
class RunStarted(Event):
    mission: str
    repo: str = ""
    target_branch: str = ""
    head: str = ""
    workers: dict[str, str] = field(default_factory=dict)  # worker id → role
    pid: int = 0


@kind("run_halting")
class RunHalting(Event):
    """The provider refused pd for good: no new work starts."""

    reason: str


@kind("budget_exhausted")
class BudgetExhausted(Event):
    reason: str


@kind("run_aborted")
class RunAborted(Event):
    reason: str
    tasks: list[str] = field(default_factory=list)


@kind("run_stopped")
class RunStopped(Event):
    """Halted (budget, provider): what was still pending did not run."""

    reason: str
    tasks: list[str] = field(default_factory=list)


@kind("run_stalled")
class RunStalled(Event):
    reason: str


@kind("run_finished")
class RunFinished(Event):
    status: str
    exit_code: int = 0
    head: str = ""
    counts: dict[str, int] = field(default_factory=dict)


@kind("cassette_recorded")
class CassetteRecorded(Event):
    path: str


@kind("control")
class ControlReceived(Event):
    """A request from another pd process (``pd abort``, ``pd handoff``)."""

    action: str
    task: str | None = None
    worker: str | None = None


@kind("control_refused")
class ControlRefused(Event):
    """A request pd could not act on (malformed, or naming what the run lacks); the
    sender is told why."""

    action: str
    reason: str


# ---- workers ----------------------------------------------------------------------


@kind("worker_spawned")
class WorkerSpawned(Event):
    worker: str
    role: str


@kind("worker_ready")
class WorkerReady(Event):
    worker: str
    pid: int


@kind("worker_failed_to_start")
class WorkerFailedToStart(Event):
    worker: str
    error: str


@kind("worker_crashed")
class WorkerCrashed(Event):
    worker: str
    exitcode: int | None
    task: str | None = None


@kind("worker_respawned")
class WorkerRespawned(Event):
    worker: str
    pid: int
    restarts: int


@kind("worker_retired")
class WorkerRetired(Event):
    worker: str
    crashes: int


@kind("heartbeat_missed")
class HeartbeatMissed(Event):
    worker: str
    seconds: float


@kind("progress")
class Progress(Event):
    """A worker's live line (``model: …``); shown, never written to the log."""

    worker: str
    task: str
    text: str


# ---- a task's life ----------------------------------------------------------------


@kind("task_assigned")
class TaskAssigned(Event):
    task: str
    attempt: int = 0  # filled in by the transition (``tasks.transitions``)
    worker: str = ""
    branch: str = ""
    base: str = ""
    escalated: bool = False
    note: str = ""


@kind("task_started")
class TaskStarted(Event):
    task: str
    worker: str
    attempt: int
    waited: float = 0.0  # from ready to the worker's start
    dispatch: float = 0.0  # from assignment to the worker's start


@kind("task_submitted")
class TaskSubmitted(Event):
    task: str
    worker: str
    attempt: int
    commit: str
    files: list[str]
    summary: str
    branch: str
    state: str = ""  # where the task went, reviewing or merging: filled in by the transition


@kind("attempt_failed")
class AttemptFailed(Event):
    task: str
    attempt: int
    reason: str
    state: str = ""  # the task's state after, pending (retried) or failed: filled in
    handoff: str = ""
    worker: str | None = None


@kind("attempt_infra_failed")
class AttemptInfraFailed(Event):
    """pd's side broke (git, disk): retried, never charged to the agent."""

    task: str
    attempt: int
    reason: str
    state: str
    worker: str | None = None
    merger: bool = False


@kind("attempt_handed_off")
class AttemptHandedOff(Event):
    task: str
    worker: str
    attempt: int
    commit: str
    handoff: str


@kind("handoff_requested")
class HandoffRequested(Event):
    worker: str
    task: str


@kind("handoff_refused")
class HandoffRefused(Event):
    worker: str
    reason: str


@kind("task_failed")
class TaskFailed(Event):
    task: str
    attempts: int
    blocked: list[str] = field(default_factory=list)


@kind("task_aborted")
class TaskAborted(Event):
    task: str
    changed: list[str] = field(default_factory=list)


@kind("skills_used")
class SkillsUsed(Event):
    task: str
    worker: str
    role: str
    attempt: int
    attempt_kind: str  # task, plan or review
    offered: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)


# ---- review -----------------------------------------------------------------------


@kind("review_started")
class ReviewStarted(Event):
    task: str
    worker: str
    round: int
    commit: str
    implementer: str = ""


@kind("review_done")
class ReviewDone(Event):
    task: str
    worker: str
    round: int
    verdict: str  # approve or request_changes
    comments: str = ""
    commit: str = ""
    feedback: str = ""
    state: str = ""


@kind("review_failed")
class ReviewFailed(Event):
    task: str
    worker: str
    round: int
    reason: str
    failures: int
    state: str


@kind("review_rounds_exhausted")
class ReviewRoundsExhausted(Event):
    task: str
    rounds: int
    commit: str


# ---- merging ----------------------------------------------------------------------


@kind("batch_started")
class BatchStarted(Event):
    """A batch went to the merger: ``commits``, each task's commit, in the batch's order
    (its tasks land, or not, together); ``batch``: the merge queue's run; ``on``: the
    batch whose tree it is tested on (parallel gates), 0 for the target head."""

    commits: dict[str, str]
    batch: int
    on: int = 0

    @property
    def tasks(self) -> list[str]:
        return list(self.commits)


@kind("merge_started")
class MergeStarted(Event):
    """One task of a batch went to the merger: what logs before ``batch_started``
    recorded, one event per task (read, never written)."""

    task: str
    commit: str
    batch: int = 0
    on: int = 0


@kind("task_merged")
class TaskMerged(Event):
    task: str
    attempt: int
    head: str
    seconds: float = 0.0
    commit: str = ""
    recovered: bool = False  # the merge landed untold; ``pd resume`` found it


@kind("task_rejected")
class TaskRejected(Event):
    task: str
    attempt: int
    reason: str
    conflicts: list[str] = field(default_factory=list)
    log_tail: str = ""


@kind("gate_flaky")
class GateFlaky(Event):
    """The gate failed and then passed on the same tree: its flakes cost nobody an
    attempt. ``tests``: the ones that flaked, when the runner named them."""

    tasks: list[str] = field(default_factory=list)
    tests: list[str] = field(default_factory=list)


@kind("merge_restarted")
class MergeRestarted(Event):
    """The target moved under a landing (not by this run): the trees the merge queue had
    stacked on it are void, and ``tasks`` are planned again on the new head."""

    reason: str
    tasks: list[str] = field(default_factory=list)


@kind("task_already_merged")
class TaskAlreadyMerged(Event):
    task: str
    attempt: int
    commit: str


@kind("merger_crashed")
class MergerCrashed(Event):
    exitcode: int | None
    task: str | None = None


@kind("merger_failed_to_start")
class MergerFailedToStart(Event):
    error: str


# ---- planning ---------------------------------------------------------------------


@kind("plan_assigned")
class PlanAssigned(Event):
    task: str
    worker: str
    attempt: int
    base: str = ""


@kind("plan_accepted")
class PlanAccepted(Event):
    task: str
    worker: str
    attempt: int
    tasks: list[dict[str, Any]]
    summary: str = ""
    critical_path: list[str] = field(default_factory=list)


@kind("plan_attempt_failed")
class PlanAttemptFailed(Event):
    task: str
    attempt: int
    reason: str
    state: str
    worker: str | None = None


# ---- model calls and money --------------------------------------------------------


@kind("usage")
class UsageRecorded(Event):
    """One model call's usage and cost (``cost`` a decimal string; None when unpriced).
    ``lost``: the worker died mid-call and the call is charged its whole reservation."""

    worker: str
    task: str
    role: str
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    cost: str | None = None
    permit_rtt: float | None = None
    overrun: str | None = None
    lost: bool = False
    reserved_input: int = 0
    max_output: int = 0


@kind("budget_overrun")
class BudgetOverrun(Event):
    worker: str
    task: str
    amount: str


@kind("call_failed")
class CallFailed(Event):
    worker: str
    status: str  # retry or fatal
    error: str
    retry_after: float | None = None
