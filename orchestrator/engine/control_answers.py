"""The coordinator's answers to requests from other ``pd`` processes and to handoffs.

Mixed into ``Coordinator``: ``pd abort`` of the run, one task or one worker, and
``pd handoff`` (the worker commits its work in progress, a fresh process in the same
slot goes on from it). What a worker that could not finish leaves the next attempt is
its running handoff note, read here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.engine.snapshot import SlotState
from orchestrator.record import control
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import ACTIVE, TaskState
from orchestrator.wire.messages import AbortTask, HandedOff, HandOff

if TYPE_CHECKING:
    from orchestrator.engine.coordinator import Coordinator
    from orchestrator.engine.snapshot import Slot


class ControlSteps:
    """Coordinator methods for control requests and handoffs."""

    def _control(self: Coordinator, request: control.ControlRequest) -> None:
        """Act on a request and answer it; one pd cannot act on is refused with the
        reason, which its sender prints (``control.await_answer``)."""
        problem = request.problem() or self._missing_target(request)
        if problem is not None:
            self.emit(ev.ControlRefused(action=request.action, reason=problem))
            control.answer(self.store, request, problem)
            return
        self.emit(
            ev.ControlReceived(action=request.action, task=request.task, worker=request.worker)
        )
        if request.action == "handoff":
            problem = self._hand_off_worker(request.worker)
        elif request.task:
            self._abort_task(request.task)
        elif request.worker:
            self._abort_worker(request.worker)
        else:
            self.abort_reason = "aborted by user"
        control.answer(self.store, request, problem)

    def _missing_target(self: Coordinator, request: control.ControlRequest) -> str | None:
        if request.task and request.task not in self.graph:
            return f"no task {request.task!r} in this run"
        slot = self.slots.get(request.worker or "")
        if request.worker and (slot is None or slot.state == "retired"):
            return f"no live worker {request.worker!r} in this run"
        return None

    def _abort_task(self: Coordinator, task_id: str) -> None:
        task = self.graph.get(task_id)
        for slot in self.slots.values():
            if slot.task == task_id:
                self.pool.send(slot.id, AbortTask(task_id=task_id))
        self.merges.drop(task_id)
        if task.state in ACTIVE:  # what ended (merged, failed...) stays as it ended
            self.transition(ev.TaskAborted(task=task_id))

    def _abort_worker(self: Coordinator, worker_id: str) -> None:
        slot = self.slots.get(worker_id)
        if slot is None or slot.state == SlotState.RETIRED:
            return
        self._review_interrupted(slot, f"worker {worker_id} was stopped by the user")
        task = slot.task
        self._retire(slot)
        if task is not None:
            self._attempt_failed(
                task,
                f"worker {worker_id} was stopped by the user",
                self._running_note(task),
                worker=worker_id,
            )

    def _running_note(self: Coordinator, task_id: str) -> str:
        """The note the worker kept current during the attempt it could not finish."""
        try:
            path = self.store.handoff_path(task_id, self.graph.get(task_id).attempts)
            return path.read_text()
        except (OSError, KeyError):
            return ""

    def _hand_off_worker(self: Coordinator, worker_id: str | None) -> str | None:
        """``pd handoff``: the worker commits its work in progress and stops the attempt;
        see ``_handed_off`` for the fresh start. Returns why it cannot, if it cannot."""
        slot = self.slots.get(worker_id or "")
        if slot is None or slot.task is None or slot.state != SlotState.BUSY:
            reason = f"worker {worker_id} has no task to hand off"
            self.emit(ev.HandoffRefused(worker=worker_id or "", reason=reason))
            return reason
        self.emit(ev.HandoffRequested(worker=slot.id, task=slot.task))
        self.pool.send(slot.id, HandOff(task_id=slot.task))
        return None

    def _handed_off(self: Coordinator, slot: Slot, message: HandedOff) -> None:
        task = self.graph.get(message.task_id)
        if task.state is not TaskState.RUNNING:
            return
        handed = ev.AttemptHandedOff(
            task=task.id,
            worker=slot.id,
            attempt=message.attempt,
            commit=message.start_from,
            handoff=message.handoff,
        )
        self.transition(handed)
        if slot.state != SlotState.RETIRED and not self.abort_reason:  # a fresh process, same slot
            self._respawn(slot)
