"""The typed messages that cross process boundaries.

Each message is a small dataclass that serialises to one JSON object with a ``type``
field, so the same protocol could run over another transport and every message can be
logged as it is. Pipes carry the JSON bytes, never pickles.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_REGISTRY: dict[str, type[Message]] = {}
_NAMES: dict[type, tuple[str, ...]] = {}  # a message class's field names, looked up once


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass
class Message:
    """Base of every wire message; subclasses register themselves by class name."""

    type_name: ClassVar[str] = "Message"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_name = cls.__name__
        _REGISTRY[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: fields are JSON values already, and asdict's deep copy was
        # the largest per-message cost on the coordinator's side.
        return {"type": self.type_name, **{n: getattr(self, n) for n in _names(type(self))}}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def from_dict(data: dict[str, Any]) -> Message:
    """Rebuild a message from its dict form; unknown keys are dropped (newer peer)."""
    cls = _REGISTRY[data["type"]]
    return cls(**{n: data[n] for n in _names(cls) if n in data})


def from_bytes(raw: bytes) -> Message:
    return from_dict(json.loads(raw))


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


# ---- coordinator <-> merger ------------------------------------------------------


@dataclass
class MergeRequest(Message):
    """Merge ``commit`` into the target branch if the merged tree passes the gate."""

    task_id: str
    attempt: int
    branch: str
    commit: str
    title: str


@dataclass
class MergeResult(Message):
    """Outcome of a ``MergeRequest``: ``merged`` with the new ``head``, or why not."""

    task_id: str
    attempt: int
    merged: bool
    head: str = ""
    reason: str = ""
    conflicts: list[str] = field(default_factory=list)
    log_tail: str = ""
    seconds: float = 0.0
    # The merge would change nothing: the target already holds the same tree. Not merged
    # (nothing of the branch lands), but its work is there.
    already_merged: bool = False
    # pd's machinery failed (git, the disk), not the gate: the merge is tried again.
    infrastructure: bool = False


@dataclass
class MergeBatch(Message):
    """Merge ``items`` (``MergeRequest`` fields, as dicts) onto the target head as ONE
    commit, and land it only if that tree passes the gate: one gate run for them all.
    ``run_id`` is the merge queue's (``gate.MergeQueue``).

    With parallel gates (``land`` False) the merger only tests: the batch is built on
    ``base_run``'s tree (0: the target head), the result names the tested ``tree``, and
    the target moves when the coordinator sends ``LandRun``."""

    run_id: int
    items: list[dict[str, Any]]
    base_run: int = 0
    land: bool = True
    run_first: list[str] = field(default_factory=list)  # tests that failed: run them first


@dataclass
class LandRun(Message):
    """Move the target to ``run_id``'s tested tree, by compare-and-swap from the commit
    that tree was built on (the merge queue said ``Land``)."""

    run_id: int


@dataclass
class CancelRun(Message):
    """Stop ``run_id``'s gate: what it was stacked on failed or left, so its result can no
    longer mean anything. No answer comes."""

    run_id: int


@dataclass
class RunLanded(Message):
    """What a ``LandRun`` did: ``moved`` (the target is at ``head``), or not, and why
    (someone else moved the target since the tree was built)."""

    run_id: int
    moved: bool
    head: str = ""
    reason: str = ""


@dataclass
class BatchResult(Message):
    """What a ``MergeBatch`` did.

    Before the gate, items can leave: ``conflicts`` (task -> paths), ``refused`` (task ->
    why: unknown commit, a symlink or plumbing file), ``already`` (the target holds the
    same tree), ``landed_before`` (its commit is in the target) and ``deferred``. When any left, the
    gate did not run (``gated`` False): the queue plans the others again. Otherwise
    ``passed`` says what the gate said; a passing batch has landed, at ``head`` (with
    ``land`` False it has not: ``tree`` is the commit that passed, waiting for ``LandRun``)."""

    run_id: int
    base: str = ""  # the target head the batch was built on
    gated: bool = False
    passed: bool = False
    head: str = ""
    tree: str = ""  # the commit the gate ran on (parallel gates: to land when told)
    failed_tests: list[str] = field(default_factory=list)  # named in the gate's output
    reason: str = ""
    log_tail: str = ""
    seconds: float = 0.0
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    landed_before: list[str] = field(default_factory=list)
    # Conflict only with a task merged before it in this batch, not with the head: it
    # waits for that one to land, then is tried on the new head.
    deferred: list[str] = field(default_factory=list)
    # pd's machinery failed (git, the disk), not the gate: the batch is tried again.
    infrastructure: bool = False


# ---- permits: worker <-> coordinator, around every model call ---------------------


@dataclass
class AcquireTokens(Message):
    """Ask for a rate-limit permit and a budget reservation before one model call."""

    worker_id: str
    request_id: int
    task_id: str
    provider: str
    model: str
    input_tokens: int
    max_output: int
    worst_case_input: int = 0  # an upper bound, for the budget reservation


@dataclass
class Grant(Message):
    """A rate-limit permit, and the budget reserved for the call. It may arrive up to
    ``GRANT_AHEAD`` early: the call must not go out before ``not_before``."""

    request_id: int
    permit_id: int
    queued: float = 0.0  # seconds the request waited for room in the limiter
    send_by: float = 0.0  # time.monotonic() after which the permit must not be used (0: any)
    not_before: float = 0.0  # time.monotonic() from which the call may be sent (0: at once)
    max_output: int = 0  # a lower max_tokens the budget still covers (0: as asked)


@dataclass
class Deny(Message):
    """The call must not be made: ``reason`` says why (budget, request too large)."""

    request_id: int
    reason: str
    budget: bool = False


@dataclass
class CallSent(Message):
    """The call's request went on the wire at ``at`` (time.monotonic(), one clock for
    every process on Linux): the limiter counts the call from then, however late."""

    worker_id: str
    request_id: int
    permit_id: int
    at: float


@dataclass
class CallDone(Message):
    """How a granted call ended: ``ok`` with usage, ``retry`` (429/5xx), ``fatal``, or
    ``not_sent``. The coordinator settles the limiter and the ledger from it."""

    worker_id: str
    request_id: int
    permit_id: int
    status: str
    usage: dict[str, int] = field(default_factory=dict)
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    halt: bool = False  # a failure no retry can cure (bad key, spend limit): stop the run
    permit_rtt: float | None = None  # seconds the permit took, less its time in the queue


@dataclass
class UsageReport(Message):
    """Usage a command agent reported after its run (it calls its model itself, so
    pd can only account for it afterwards)."""

    worker_id: str
    task_id: str
    model: str
    usage: dict[str, int]
    cost_usd: str | None = None
