"""The one state machine of a task's life: an event applied to the task graph.

The live run and ``pd resume`` go through the same function. Live, the coordinator
builds an event with the facts it knows (a worker's report, the merger's verdict), applies
it, and records the event ``apply`` returns, whose outcome fields (the attempt number,
the state the task went to, the dependents it blocked) the transition filled in. On
resume, the recorded events are applied again in order: a recorded outcome is taken as
it was decided, so a run resumes exactly where it was even if the mission's limits have
changed since. Resume is nothing but this replay plus ``interrupted``: what a dead
coordinator's processes were doing is lost and goes back to the queue.

Events that change no task (a run's start, usage, a worker's life) pass through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import ACTIVE, TaskGraph, TaskState

MAX_INFRA_FAILURES = 5  # per task: git or disk failures retried before the task fails
MAX_REVIEW_FAILURES = 3  # review jobs of one version that may end without a verdict


@dataclass
class Change:
    """What one event did: the event with its outcome filled in (record this one), the
    tasks that became ready and those that became blocked."""

    event: ev.Event
    ready: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


# Events after which a task's dependents may change too (unblocked, blocked, ready).
REACHING = (
    ev.TaskMerged,
    ev.TaskAlreadyMerged,
    ev.AttemptFailed,
    ev.AttemptInfraFailed,
    ev.ReviewFailed,
    ev.TaskAborted,
)


def apply(graph: TaskGraph, event: ev.Event) -> Change:
    """Apply ``event`` to ``graph``; see the module docstring."""
    task = getattr(event, "task", None)
    if task is None or task not in graph:
        return Change(event)
    around = [task, *graph.dependents(task)] if isinstance(event, REACHING) else [task]
    if len(around) == 1:  # only the task itself can change: the short way
        node = graph.get(task)
        ready_before, blocked_before = graph.is_ready(task), node.state is TaskState.BLOCKED
        done = _transition(graph, event)
        ready = graph.is_ready(task) and not ready_before
        blocked = node.state is TaskState.BLOCKED and not blocked_before
        return Change(done, ready=[task] if ready else [], blocked=[task] if blocked else [])
    ready_before, blocked_before = _ready(graph, around), _blocked(graph, around)
    done = _transition(graph, event)
    return Change(
        done,
        ready=[t for t in _ready(graph, around) if t not in ready_before],
        blocked=[t for t in _blocked(graph, around) if t not in blocked_before],
    )


def _ready(graph: TaskGraph, ids: list[str]) -> list[str]:
    return [t for t in ids if graph.is_ready(t)]


def _blocked(graph: TaskGraph, ids: list[str]) -> list[str]:
    return [t for t in ids if graph.get(t).state is TaskState.BLOCKED]


def _state(recorded: str) -> TaskState | None:
    return TaskState(recorded) if recorded else None


def _transition(graph: TaskGraph, event: ev.Event) -> ev.Event:
    match event:
        case ev.TaskAssigned():
            attempt = graph.start(event.task, event.worker, event.attempt or None)
            return event.but(attempt=attempt)
        case ev.TaskSubmitted():
            state = graph.submitted(
                event.task, event.branch, event.commit, event.summary, _state(event.state)
            )
            return event.but(state=str(state))
        case ev.ReviewStarted():
            graph.start_review(event.task, event.worker)
        case ev.ReviewDone():
            approved = event.verdict == "approve"
            state = graph.reviewed(event.task, approved, event.feedback)
            return event.but(state=str(state))
        case ev.ReviewFailed():
            state = graph.review_failed(
                event.task, event.reason, MAX_REVIEW_FAILURES, _state(event.state)
            )
            return event.but(state=str(state))
        case ev.TaskMerged():
            graph.merged(event.task, event.head)
        case ev.TaskAlreadyMerged():
            graph.already_merged(event.task, event.commit)
        case ev.AttemptFailed():
            state = graph.attempt_failed(
                event.task, event.reason, event.handoff, _state(event.state)
            )
            attempt = event.attempt or graph.get(event.task).attempts
            return event.but(state=str(state), attempt=attempt)
        case ev.AttemptHandedOff():
            graph.hand_off(event.task, event.handoff, event.commit)
        case ev.AttemptInfraFailed():
            state = graph.infra_failed(
                event.task, event.reason, MAX_INFRA_FAILURES, _state(event.state)
            )
            attempt = event.attempt or graph.get(event.task).attempts
            return event.but(state=str(state), attempt=attempt)
        case ev.TaskAborted():
            if graph.get(event.task).state in ACTIVE:  # what ended stays as it ended
                return event.but(changed=graph.abort(event.task))
    return event


def interrupted(graph: TaskGraph) -> None:
    """After a replay: work a dead coordinator's processes held is lost. A running
    attempt goes back to the queue, not counted (its worker never reported); a review
    job in progress is handed out again. A version waiting for the merger stays so."""
    for node in graph:
        if node.state is TaskState.RUNNING:
            node.state, node.worker = TaskState.PENDING, None
            node.attempts -= 1
        elif node.state is TaskState.REVIEWING:
            node.reviewer = None


def replay(graph: TaskGraph, events: Iterable[ev.Event], resume: bool = True) -> None:
    """Bring ``graph`` to where the recorded ``events`` left it; ``resume``: then give
    back what the dead coordinator's processes held (``interrupted``)."""
    for event in events:
        apply(graph, event)
    if resume:
        interrupted(graph)
