"""The coordinator's review steps: hand submitted work to reviewers, act on verdicts.

A mixin of ``Coordinator`` (it uses its graph, slots, pool, plan and ``emit``), kept in its
own module so the main loop stays readable. Like the rest of the coordinator it records
each event before acting on it, so ``pd resume`` can rebuild a run that was reviewing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.agent.reviewer import (
    APPROVE,
    REQUEST_CHANGES,
    last_review_comments,
    review_feedback,
    reviews_code,
)
from orchestrator.engine.snapshot import SlotJob, SlotState
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskNode, TaskState
from orchestrator.wire.messages import (
    MergeRequest,
    Message,
    ReviewDone,
    ReviewJob,
    TaskFailed,
    TaskStarted,
)

if TYPE_CHECKING:
    from orchestrator.engine.snapshot import Slot


class ReviewFlow:
    """Review jobs: which idle reviewer takes which task, and what a verdict does."""

    graph: Any
    slots: dict[str, Slot]
    plan: Any
    pool: Any
    merges: Any
    head: str
    review_tried: dict[str, set[str]]  # task -> reviewers whose job on this version failed
    # and, from Coordinator: emit(kind, **data), _next_merge()

    # ---- handing out ----------------------------------------------------------------

    def _assign_reviews(self) -> None:
        for task in self.graph.needs_reviewer():
            slot = self._reviewer_for(task)
            if slot is not None:
                self._start_review(slot, task)

    def _reviewer_for(self, task: TaskNode) -> Slot | None:
        """An idle worker whose role reviews code, not the implementer's. One that has not
        failed this version yet comes first; while such a one is still booting, the version
        waits for it rather than going back to one that already failed."""
        able = [
            s
            for s in self.slots.values()
            if s.state in (SlotState.IDLE, SlotState.BOOTING)
            and s.id != task.worker
            and reviews_code(self.plan.roles[s.role])
        ]
        tried = self.review_tried.get(task.id, set())
        fresh = [s for s in able if s.id not in tried]
        pick = [s for s in (fresh or able) if s.state == SlotState.IDLE]
        return min(pick, key=lambda s: int(s.id.lstrip("w") or 0), default=None)

    def _start_review(self, slot: Slot, task: TaskNode) -> None:
        round_ = task.reviews + 1
        message = ReviewJob(
            task_id=task.id,
            attempt=round_,
            commit=task.commit or "",
            base=self.head,  # the diff is base...commit: the task's work only
            title=task.title,
            description=task.description,
            summary=task.summary,
            rounds_used=task.review_rounds,
            max_rounds=task.max_review_rounds,
            previous_comments=last_review_comments(task.feedback)
            if task.verdict == REQUEST_CHANGES
            else "",
            skills=list(self.plan.roles[slot.role].skills),
            test_command=self.plan.gate_command,
        )
        started = ev.ReviewStarted(
            task=task.id,
            worker=slot.id,
            round=round_,
            commit=task.commit or "",
            implementer=task.worker or "",
        )
        self.transition(started)
        slot.state, slot.task, slot.attempt, slot.job = (
            SlotState.BUSY,
            task.id,
            round_,
            SlotJob.REVIEW,
        )
        self.pool.send(slot.id, message)

    # ---- answers --------------------------------------------------------------------

    def _review_message(self, slot: Slot, message: Message | None) -> bool:
        """Handle what a reviewing worker sends about its review; False: not ours."""
        if slot.job != SlotJob.REVIEW or not isinstance(
            message, ReviewDone | TaskFailed | TaskStarted
        ):
            return False
        if message.task_id != slot.task or message.attempt != slot.attempt:
            return True  # a stale answer about an earlier job
        if isinstance(message, ReviewDone):
            self._end_review_job(slot)
            self._review_done(slot, message)
        elif isinstance(message, TaskFailed):
            task_id = slot.task
            self._end_review_job(slot)
            self._review_lost(slot.id, task_id, message.attempt, message.reason)
        return True

    def _end_review_job(self, slot: Slot) -> None:
        slot.task, slot.state, slot.job = None, SlotState.IDLE, SlotJob.TASK

    def _review_interrupted(self, slot: Slot, reason: str) -> None:
        """The reviewer died or was stopped mid-review: the job goes to another reviewer."""
        if slot.job != SlotJob.REVIEW or slot.task is None:
            return
        task_id, round_ = slot.task, slot.attempt
        slot.task, slot.job = None, SlotJob.TASK
        self._review_lost(slot.id, task_id, round_, reason)

    def _review_done(self, slot: Slot, message: ReviewDone) -> None:
        self._skills_used(slot, message, "review")  # type: ignore[attr-defined]
        task = self.graph.get(message.task_id)
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
        self.transition(done)
        self.review_tried.pop(task.id, None)
        if task.state is TaskState.MERGING:
            self._queue_merge(task)

    def _review_lost(self, worker: str, task_id: str | None, round_: int, reason: str) -> None:
        if task_id is None:
            return
        task = self.graph.get(task_id)
        if task.state is not TaskState.REVIEWING or task.reviewer != worker:
            return
        self.review_tried.setdefault(task_id, set()).add(worker)
        why = f"review round {round_} by {worker} ended without a verdict: {reason}"
        failed = ev.ReviewFailed(
            task=task_id,
            worker=worker,
            round=round_,
            reason=why,
            failures=task.review_failures + 1,
            state="",
        )
        change = self.transition(failed)
        if task.state is TaskState.FAILED:
            self.emit(ev.TaskFailed(task=task_id, attempts=task.attempts, blocked=change.blocked))

    # ---- on to the merger -----------------------------------------------------------

    def _after_submit(self, task: TaskNode, state: TaskState) -> None:
        """A submitted version goes to review, or (review off, or rounds used up) to the
        merge queue; the gate decides in every case."""
        if state is TaskState.REVIEWING:
            return  # _assign_reviews hands it out
        if task.review:
            self.emit(
                ev.ReviewRoundsExhausted(
                    task=task.id, rounds=task.review_rounds, commit=task.commit
                )
            )
        self._queue_merge(task)

    def _queue_merge(self, task: TaskNode) -> None:
        self.merges.add(
            MergeRequest(
                task_id=task.id,
                attempt=task.attempts,
                branch=task.branch or "",
                commit=task.commit or "",
                title=task.title,
            )
        )
        self._next_merge()

    def _requeue_approved(self) -> None:
        """On resume: approved work (restored as merging) goes back to the merge queue."""
        for task in self.graph:
            if task.state is TaskState.MERGING:
                self._queue_merge(task)

    def _reviews_in_flight(self) -> bool:
        return any(t.reviewer for t in self.graph.any_in(TaskState.REVIEWING))

    def _reviewable(self, live: list[Slot]) -> bool:
        """Whether some task in review has, or can get, a live reviewer."""
        return any(
            task.reviewer is not None
            or any(s.id != task.worker and reviews_code(self.plan.roles[s.role]) for s in live)
            for task in self.graph.any_in(TaskState.REVIEWING)
        )
