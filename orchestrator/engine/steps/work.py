"""Task attempts: which idle worker starts which ready task, and what each answer means.

An attempt ends one of four ways: done (its commit goes to review or the merge queue),
failed (the agent's fault: counted, and retried with the reason as feedback), failed by
infrastructure (pd's fault: retried as if it never ran, never shown to the model), or
handed off (the next attempt starts from the committed work in progress).
"""

from __future__ import annotations

from typing import Any

from orchestrator.engine.runstate import RunState, Slot, SlotState
from orchestrator.engine.steps import merge, planning, review
from orchestrator.engine.steps.effects import Effects, Respawn, Retire, Show
from orchestrator.planning.taskplan import PLAN_ID
from orchestrator.record import events as ev
from orchestrator.system.worktrees import task_branch
from orchestrator.tasks.scheduling import match
from orchestrator.tasks.taskgraph import TaskNode, TaskState
from orchestrator.tasks.transitions import apply
from orchestrator.wire.messages import (
    HandedOff,
    Message,
    PlanDone,
    Progress,
    Ready,
    ReviewDone,
    TaskDone,
    TaskFailed,
    TaskJob,
    TaskStarted,
)

SESSION_LINES = 40  # of the session log, in each assignment
MAX_CRASHES = 5  # per worker slot; past this the slot is retired (circuit breaker)


def assign(run: RunState, out: Effects, now: float) -> None:
    """Reviews first (a verdict lets finished work merge), then ready tasks to idle
    workers that fit them, critical path first."""
    review.assign_reviews(run, out)
    ready = run.graph.ready()  # each stamped by the graph when it became ready
    idle = [s.id for s in run.slots.values() if s.state == SlotState.IDLE]
    if not idle or not ready:
        return
    busy = [f for t in run.graph.any_in(TaskState.RUNNING) for f in t.files]
    roles = {wid: run.rules.roles[run.slots[wid].role] for wid in idle}
    for worker_id, task in match(ready, idle, roles, busy, run.graph.ready_needs()):
        start_task(run, out, run.slots[worker_id], task, now)


def start_task(run: RunState, out: Effects, slot: Slot, task: TaskNode, now: float) -> None:
    branch = task_branch(run.rules.run_id, task.id)
    assigned = ev.TaskAssigned(task=task.id, worker=slot.id, branch=branch, base=run.head)
    started = apply(run.graph, assigned).event  # recorded below, with ``escalated``
    escalate = run.graph.escalated(task.id)
    message = TaskJob(
        task_id=task.id,
        attempt=started.attempt,
        title=task.title,
        description=task.description,
        branch=branch,
        target_head=run.head,
        files=list(task.files),
        feedback=list(task.feedback),
        handoff=task.handoff,
        dependencies={d: run.graph.get(d).summary for d in task.deps},
        escalate=escalate,
        start_from=task.start_from or "",
        context_files=list(run.rules.mission.context_files),
        session=run.session[-SESSION_LINES:],
    )
    slot.state, slot.task, slot.attempt = SlotState.BUSY, task.id, started.attempt
    # The record says whether a stronger model took the attempt, not just that it could.
    out.emit(started.but(escalated=escalate and run.rules.escalation))
    run.assigned_at[task.id] = now
    out.send(slot.id, message)


def on_message(run: RunState, out: Effects, slot: Slot, message: Message, now: float) -> None:
    """A worker's message (the merger's go to ``merge``)."""
    if review.on_review_message(run, out, slot, message):
        return
    if isinstance(message, Ready):
        worker_ready(out, slot, message)
    elif isinstance(message, TaskStarted):
        task_started(run, out, slot, message)
    elif isinstance(message, Progress):
        out.append(Show(ev.Progress(worker=slot.id, task=message.task_id, text=message.text)))
    elif isinstance(message, TaskDone):
        task_done(run, out, slot, message)
    elif isinstance(message, PlanDone):
        skills_used(out, slot, message, "plan")
        release(slot, message.task_id)
        planning.plan_done(run, out, slot, message)
    elif isinstance(message, TaskFailed | HandedOff):
        skills_used(out, slot, message, "task")
        release(slot, message.task_id)
        if isinstance(message, HandedOff):
            handed_off(run, out, slot, message)
        elif message.infrastructure and message.task_id != PLAN_ID:
            infra_failed(run, out, message.task_id, message.reason, worker=slot.id)
        else:
            attempt_failed(run, out, message.task_id, message.reason, message.handoff, slot.id)


def worker_ready(out: Effects, slot: Slot, message: Ready) -> None:
    if message.error:
        out.emit(ev.WorkerFailedToStart(worker=slot.id, error=message.error))
        retire(out, slot)
        return
    slot.state = SlotState.IDLE
    out.emit(ev.WorkerReady(worker=slot.id, pid=message.pid))


def task_started(run: RunState, out: Effects, slot: Slot, message: TaskStarted) -> None:
    """How long the task waited once ready, and how long its job took to reach the
    worker: the two latencies the scheduler is measured by."""
    ready_at = run.graph.take_ready_at(message.task_id)
    waited = message.at - (message.at if ready_at is None else ready_at)
    dispatch = message.at - run.assigned_at.pop(message.task_id, message.at)
    started = ev.TaskStarted(
        task=message.task_id,
        worker=slot.id,
        attempt=message.attempt,
        waited=round(max(waited, 0.0), 4),
        dispatch=round(max(dispatch, 0.0), 4),
    )
    out.emit(started, sync=False)


def skills_used(
    out: Effects,
    slot: Slot,
    message: TaskDone | TaskFailed | HandedOff | PlanDone | ReviewDone,
    kind: str,
) -> None:
    if message.skills:
        used = ev.SkillsUsed(
            task=message.task_id,
            worker=slot.id,
            role=slot.role,
            attempt=message.attempt,
            attempt_kind=kind,
            offered=message.skills.get("offered", []),
            used=message.skills.get("used", []),
        )
        out.emit(used, sync=False)


def release(slot: Slot, task_id: str) -> None:
    if slot.task == task_id:
        slot.task, slot.state = None, SlotState.IDLE


def task_done(run: RunState, out: Effects, slot: Slot, message: TaskDone) -> None:
    skills_used(out, slot, message, "task")
    release(slot, message.task_id)
    if run.graph.get(message.task_id).state is not TaskState.RUNNING:
        return  # aborted meanwhile: its branch stays, it is not merged
    if message.already_merged:
        merge.already_merged(run, out, message.task_id, message.attempt, message.commit)
        return
    submitted = ev.TaskSubmitted(
        task=message.task_id,
        worker=slot.id,
        attempt=message.attempt,
        commit=message.commit,
        files=message.changed_files,
        summary=message.summary,
        branch=message.branch,
        state="",
    )
    out.apply(run.graph, submitted)
    review.after_submit(run, out, run.graph.get(message.task_id))


def attempt_failed(
    run: RunState, out: Effects, task_id: str, reason: str, handoff: str = "", worker: str = ""
) -> None:
    """The agent's attempt failed: counted; retried with the reason, or failed for good."""
    if task_id == PLAN_ID and run.planning_open:
        planning.plan_failed(run, out, reason, worker=worker)
        return
    task = run.graph.get(task_id)
    if task.state not in (TaskState.RUNNING, TaskState.MERGING):
        return
    extra = {"worker": worker} if worker else {}
    failed = ev.AttemptFailed(
        task=task_id, attempt=task.attempts, reason=reason, state="", handoff=handoff, **extra
    )
    failed_for_good(out, task, out.apply(run.graph, failed).blocked)


def failed_for_good(out: Effects, task: TaskNode, blocked: list[str]) -> None:
    if task.state is TaskState.FAILED:
        out.emit(ev.TaskFailed(task=task.id, attempts=task.attempts, blocked=blocked))


def infra_failed(
    run: RunState, out: Effects, task_id: str, reason: str, requeue: bool = True, **extra: Any
) -> bool:
    """Retried as if it never ran: the agent is not charged and never sees it. Returns
    whether its merge is to be tried again (queued here unless ``requeue`` is False)."""
    task = run.graph.get(task_id)
    if task.state not in (TaskState.RUNNING, TaskState.MERGING):
        return False
    broke = ev.AttemptInfraFailed(
        task=task_id, attempt=task.attempts, reason=reason, state="", **extra
    )
    failed_for_good(out, task, out.apply(run.graph, broke).blocked)
    again = task.state is TaskState.MERGING  # the merge is tried again
    if again and requeue:
        merge.queue_merge(run, out, task)
    return again


def handed_off(run: RunState, out: Effects, slot: Slot, message: HandedOff) -> None:
    """The attempt stopped with its work committed: the next one starts from it, in a
    fresh process in the same slot."""
    task = run.graph.get(message.task_id)
    if task.state is not TaskState.RUNNING:
        return
    handed = ev.AttemptHandedOff(
        task=task.id,
        worker=slot.id,
        attempt=message.attempt,
        commit=message.start_from,
        handoff=message.handoff,
    )
    out.apply(run.graph, handed)
    if slot.state != SlotState.RETIRED and not run.aborting:
        respawn(out, slot)


# ---- worker health --------------------------------------------------------------------


def worker_died(run: RunState, out: Effects, worker_id: str, exitcode: int | None) -> None:
    slot = run.slots[worker_id]
    why = f"worker {worker_id} died (exit code {exitcode})"
    review.review_interrupted(run, out, slot, why)
    task = slot.task
    slot.task, slot.crashes = None, slot.crashes + 1
    # Its calls are given up by the permit thread once it has read the dead pipe out.
    out.emit(ev.WorkerCrashed(worker=worker_id, exitcode=exitcode, task=task))
    if task is not None:
        note = run.rules.running_note(task, run.graph.get(task).attempts)
        attempt_failed(run, out, task, f"{why} during the attempt", note, worker_id)
    if run.aborting:
        return
    if slot.crashes > MAX_CRASHES:
        retire(out, slot)
        return
    respawn(out, slot)


def respawn(out: Effects, slot: Slot) -> None:
    """A fresh process in the slot; the shell records ``worker_respawned`` with its pid."""
    slot.state = SlotState.BOOTING
    out.append(Respawn(slot.id))


def retire(out: Effects, slot: Slot) -> None:
    slot.state, slot.task = SlotState.RETIRED, None
    out.append(Retire(slot.id))
    out.emit(ev.WorkerRetired(worker=slot.id, crashes=slot.crashes))
