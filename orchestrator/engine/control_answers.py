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
from orchestrator.tasks.taskgraph import TaskState
from orchestrator.wire.messages import AbortTask, HandedOff, HandOff

if TYPE_CHECKING:
    from orchestrator.engine.coordinator import Coordinator
    from orchestrator.engine.snapshot import Slot


class ControlSteps:
    """Coordinator methods for control requests and handoffs."""

    def _control(self: Coordinator, request: control.ControlRequest) -> None:
        self.emit("control", action=request.action, task=request.task, worker=request.worker)
        if request.action == "handoff":
            self._hand_off_worker(request.worker)
            return
        if request.action != "abort":
            return
        if request.task:
            self._abort_task(request.task)
        elif request.worker:
            self._abort_worker(request.worker)
        else:
            self.abort_reason = "aborted by user"

    def _abort_task(self: Coordinator, task_id: str) -> None:
        try:
            task = self.graph.get(task_id)
        except KeyError:
            return
        for slot in self.slots.values():
            if slot.task == task_id:
                self.pool.send(slot.id, AbortTask(task_id=task_id))
        self.merges.drop(task_id)
        if task.state not in (
            TaskState.MERGED,
            TaskState.FAILED,
            TaskState.BLOCKED,
            TaskState.ABORTED,
        ):
            changed = self.graph.abort(task_id)
            self.emit("task_aborted", task=task_id, changed=changed)

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

    def _hand_off_worker(self: Coordinator, worker_id: str | None) -> None:
        """``pd handoff``: the worker commits its work in progress and stops the attempt;
        see ``_handed_off`` for the fresh start."""
        slot = self.slots.get(worker_id or "")
        if slot is None or slot.task is None or slot.state != SlotState.BUSY:
            self.emit("handoff_refused", worker=worker_id, reason="the worker has no task")
            return
        self.emit("handoff_requested", worker=slot.id, task=slot.task)
        self.pool.send(slot.id, HandOff(task_id=slot.task))

    def _handed_off(self: Coordinator, slot: Slot, message: HandedOff) -> None:
        task = self.graph.get(message.task_id)
        if task.state is not TaskState.RUNNING:
            return
        self.emit(
            "attempt_handed_off",
            task=task.id,
            worker=slot.id,
            attempt=message.attempt,
            commit=message.start_from,
            handoff=message.handoff,
        )
        self.graph.hand_off(task.id, message.handoff, message.start_from)
        if slot.state != SlotState.RETIRED and not self.abort_reason:  # a fresh process, same slot
            self._respawn(slot)
