"""Answers to requests from other ``pd`` processes: ``pd abort`` of the run, one task or
one worker, and ``pd handoff`` (the worker commits its work in progress; a fresh process
in the same slot goes on from it). A request pd cannot act on is refused with the
reason, which its sender prints (``control.await_answer``), never dropped.
"""

from __future__ import annotations

from orchestrator.engine.runstate import RunState, SlotState
from orchestrator.engine.steps import merge, review, work
from orchestrator.engine.steps.effects import Answer, Effects
from orchestrator.record import control
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import ACTIVE
from orchestrator.wire.messages import AbortTask, HandOff


def on_request(run: RunState, out: Effects, request: control.ControlRequest) -> None:
    problem = request.problem() or missing_target(run, request)
    if problem is not None:
        out.emit(ev.ControlRefused(action=request.action, reason=problem))
        out.append(Answer(request, problem))
        return
    received = ev.ControlReceived(action=request.action, task=request.task, worker=request.worker)
    out.emit(received)
    if request.action == "handoff":
        problem = hand_off_worker(run, out, request.worker)
    elif request.task:
        abort_task(run, out, request.task)
    elif request.worker:
        abort_worker(run, out, request.worker)
    else:
        run.abort("aborted by user")
    out.append(Answer(request, problem))


def missing_target(run: RunState, request: control.ControlRequest) -> str | None:
    if request.task and request.task not in run.graph:
        return f"no task {request.task!r} in this run"
    slot = run.slots.get(request.worker or "")
    if request.worker and (slot is None or slot.state == SlotState.RETIRED):
        return f"no live worker {request.worker!r} in this run"
    return None


def abort_task(run: RunState, out: Effects, task_id: str) -> None:
    task = run.graph.get(task_id)
    for slot in run.slots.values():
        if slot.task == task_id:
            out.send(slot.id, AbortTask(task_id=task_id))
    run.merges.drop(task_id)
    if run.merges.cancels:  # a gate stacked on a batch it was in: stop it now
        merge.next_merge(run, out)
    if task.state in ACTIVE:  # what ended (merged, failed...) stays as it ended
        out.apply(run.graph, ev.TaskAborted(task=task_id))


def abort_worker(run: RunState, out: Effects, worker_id: str) -> None:
    slot = run.slots.get(worker_id)
    if slot is None or slot.state == SlotState.RETIRED:
        return
    why = f"worker {worker_id} was stopped by the user"
    review.review_interrupted(run, out, slot, why)
    task = slot.task
    work.retire(out, slot)
    if task is not None:
        note = run.rules.running_note(task, run.graph.get(task).attempts)
        work.attempt_failed(run, out, task, why, note, worker_id)


def hand_off_worker(run: RunState, out: Effects, worker_id: str | None) -> str | None:
    """The worker commits its work in progress and stops the attempt (``work.handed_off``
    starts the next one). Returns why it cannot, if it cannot."""
    slot = run.slots.get(worker_id or "")
    if slot is None or slot.task is None or slot.state != SlotState.BUSY:
        reason = f"worker {worker_id} has no task to hand off"
        out.emit(ev.HandoffRefused(worker=worker_id or "", reason=reason))
        return reason
    out.emit(ev.HandoffRequested(worker=slot.id, task=slot.task))
    out.send(slot.id, HandOff(task_id=slot.task))
    return None
