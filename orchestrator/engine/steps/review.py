"""Review jobs: which idle reviewer takes which submitted version, and what a verdict does.

Like every step, each change is recorded before it is acted on, so ``pd resume`` can
rebuild a run that was reviewing.
"""

from __future__ import annotations

from orchestrator.agent.reviewer import (
    APPROVE,
    REQUEST_CHANGES,
    last_review_comments,
    review_feedback,
    reviews_code,
)
from orchestrator.engine.runstate import RunState, Slot, SlotJob, SlotState
from orchestrator.engine.steps import merge, work
from orchestrator.engine.steps.effects import Effects
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskNode, TaskState
from orchestrator.wire.messages import Message, ReviewDone, ReviewJob, TaskFailed, TaskStarted

# ---- handing out ----------------------------------------------------------------


def assign_reviews(run: RunState, out: Effects) -> None:
    for task in run.graph.needs_reviewer():
        slot = reviewer_for(run, task)
        if slot is not None:
            start_review(run, out, slot, task)


def reviewer_for(run: RunState, task: TaskNode) -> Slot | None:
    """An idle worker whose role reviews code, not the implementer's. One that has not
    failed this version yet comes first; while such a one is still booting, the version
    waits for it rather than going back to one that already failed."""
    able = [
        s
        for s in run.slots.values()
        if s.state in (SlotState.IDLE, SlotState.BOOTING)
        and s.id != task.worker
        and reviews_code(run.rules.roles[s.role])
    ]
    tried = run.review_tried.get(task.id, set())
    fresh = [s for s in able if s.id not in tried]
    pick = [s for s in (fresh or able) if s.state == SlotState.IDLE]
    return min(pick, key=lambda s: int(s.id.lstrip("w") or 0), default=None)


def start_review(run: RunState, out: Effects, slot: Slot, task: TaskNode) -> None:
    round_ = task.reviews + 1
    message = ReviewJob(
        task_id=task.id,
        attempt=round_,
        commit=task.commit or "",
        base=run.head,  # the diff is base...commit: the task's work only
        title=task.title,
        description=task.description,
        summary=task.summary,
        rounds_used=task.review_rounds,
        max_rounds=task.max_review_rounds,
        previous_comments=last_review_comments(task.feedback)
        if task.verdict == REQUEST_CHANGES
        else "",
        skills=list(run.rules.roles[slot.role].skills),
        test_command=run.rules.gate_command,
    )
    started = ev.ReviewStarted(
        task=task.id,
        worker=slot.id,
        round=round_,
        commit=task.commit or "",
        implementer=task.worker or "",
    )
    out.apply(run.graph, started)
    slot.state, slot.task, slot.attempt, slot.job = (
        SlotState.BUSY,
        task.id,
        round_,
        SlotJob.REVIEW,
    )
    out.send(slot.id, message)


# ---- answers --------------------------------------------------------------------


def on_review_message(run: RunState, out: Effects, slot: Slot, message: Message) -> bool:
    """Handle what a reviewing worker sends about its review; False: not ours."""
    if slot.job != SlotJob.REVIEW or not isinstance(message, ReviewDone | TaskFailed | TaskStarted):
        return False
    if message.task_id != slot.task or message.attempt != slot.attempt:
        return True  # a stale answer about an earlier job
    if isinstance(message, ReviewDone):
        end_review_job(slot)
        review_done(run, out, slot, message)
    elif isinstance(message, TaskFailed):
        task_id = slot.task
        end_review_job(slot)
        review_lost(run, out, slot.id, task_id, message.attempt, message.reason)
    return True


def end_review_job(slot: Slot) -> None:
    slot.task, slot.state, slot.job = None, SlotState.IDLE, SlotJob.TASK


def review_interrupted(run: RunState, out: Effects, slot: Slot, reason: str) -> None:
    """The reviewer died or was stopped mid-review: the job goes to another reviewer."""
    if slot.job != SlotJob.REVIEW or slot.task is None:
        return
    task_id, round_ = slot.task, slot.attempt
    slot.task, slot.job = None, SlotJob.TASK
    review_lost(run, out, slot.id, task_id, round_, reason)


def review_done(run: RunState, out: Effects, slot: Slot, message: ReviewDone) -> None:
    work.skills_used(out, slot, message, "review")
    task = run.graph.get(message.task_id)
    if task.state is not TaskState.REVIEWING or task.reviewer != slot.id:
        return  # aborted meanwhile
    feedback = review_feedback(message.attempt, slot.id, slot.role, message.comments)
    done = ev.ReviewDone(
        task=task.id,
        worker=slot.id,
        round=message.attempt,
        verdict=APPROVE if message.approved else REQUEST_CHANGES,
        comments=message.comments,
        commit=task.commit or "",
        feedback=feedback,
    )
    out.apply(run.graph, done)
    run.review_tried.pop(task.id, None)
    if task.state is TaskState.MERGING:
        merge.queue_merge(run, out, task)


def review_lost(
    run: RunState, out: Effects, worker: str, task_id: str | None, round_: int, reason: str
) -> None:
    if task_id is None:
        return
    task = run.graph.get(task_id)
    if task.state is not TaskState.REVIEWING or task.reviewer != worker:
        return
    run.review_tried.setdefault(task_id, set()).add(worker)
    why = f"review round {round_} by {worker} ended without a verdict: {reason}"
    failed = ev.ReviewFailed(
        task=task_id,
        worker=worker,
        round=round_,
        reason=why,
        failures=task.review_failures + 1,
        state="",
    )
    change = out.apply(run.graph, failed)
    if task.state is TaskState.FAILED:
        out.emit(ev.TaskFailed(task=task_id, attempts=task.attempts, blocked=change.blocked))


# ---- on to the merger -----------------------------------------------------------


def after_submit(run: RunState, out: Effects, task: TaskNode) -> None:
    """A submitted version goes to review, or (review off, or rounds used up) to the
    merge queue; the gate decides in every case."""
    if task.state is TaskState.REVIEWING:
        return  # assign_reviews hands it out
    if task.review:
        out.emit(
            ev.ReviewRoundsExhausted(task=task.id, rounds=task.review_rounds, commit=task.commit)
        )
    merge.queue_merge(run, out, task)


def reviews_in_flight(run: RunState) -> bool:
    return any(t.reviewer for t in run.graph.any_in(TaskState.REVIEWING))


def reviewable(run: RunState, live: list[Slot]) -> bool:
    """Whether some task in review has, or can get, a live reviewer."""
    return any(
        task.reviewer is not None
        or any(s.id != task.worker and reviews_code(run.rules.roles[s.role]) for s in live)
        for task in run.graph.any_in(TaskState.REVIEWING)
    )
