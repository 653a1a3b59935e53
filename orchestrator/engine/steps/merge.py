"""The run's side of the merge ratchet: one merge at a time to the merger process, and
what its results mean for the graph, the target head and the session log.

A rejected merge (conflict or failing gate) becomes a failed attempt with the conflict
paths or the gate log's tail as feedback; a failure of the merger's own machinery is an
infrastructure failure, retried without charging the agent.
"""

from __future__ import annotations

from orchestrator.engine.runstate import MERGER, RunState
from orchestrator.engine.steps import work
from orchestrator.engine.steps.effects import Effects, NoteSession, Respawn
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskNode, TaskState
from orchestrator.wire.messages import MergeRequest, MergeResult, Message, Ready


def queue_merge(run: RunState, out: Effects, task: TaskNode) -> None:
    request = MergeRequest(
        task_id=task.id,
        attempt=task.attempts,
        branch=task.branch or "",
        commit=task.commit or "",
        title=task.title,
    )
    run.merges.add(request, priority=task.critical_path)
    next_merge(run, out)


def requeue_approved(run: RunState, out: Effects) -> None:
    """On resume: approved work (restored as merging) goes back to the merge queue."""
    for task in run.graph:
        if task.state is TaskState.MERGING:
            queue_merge(run, out, task)


def next_merge(run: RunState, out: Effects) -> None:
    if run.aborting:
        return  # what the merger has finishes; nothing new starts
    request = run.merges.take()
    if request is not None:
        # Durable before the merger hears of it: a move the merger makes and cannot
        # report (the coordinator died meanwhile) is then still in the record.
        out.emit(ev.MergeStarted(task=request.task_id, commit=request.commit))
        out.send(MERGER, request)


def on_merger(run: RunState, out: Effects, message: Message) -> None:
    if isinstance(message, Ready):
        run.merges.merger_ready = not message.error
        if message.error:
            out.emit(ev.MergerFailedToStart(error=message.error))
            run.abort(f"merger failed to start: {message.error}")
    elif isinstance(message, MergeResult):
        merge_result(run, out, message)
    next_merge(run, out)


def merger_died(run: RunState, out: Effects, exitcode: int | None) -> None:
    """What it was merging goes back to the front of the queue, for a fresh merger."""
    lost = run.merges.merger_lost()
    out.emit(ev.MergerCrashed(exitcode=exitcode, task=lost))
    if not run.aborting:
        out.append(Respawn(MERGER))


def merge_result(run: RunState, out: Effects, result: MergeResult) -> None:
    run.merges.finished()
    task = run.graph.get(result.task_id)
    if result.infrastructure:
        work.infra_failed(run, out, task.id, result.reason, merger=True)
        return
    if result.already_merged and task.state is TaskState.MERGING:
        already_merged(run, out, task.id, result.attempt, result.head)
        return
    if result.merged:
        run.head = result.head
        merged = ev.TaskMerged(
            task=result.task_id,
            attempt=result.attempt,
            head=result.head,
            seconds=round(result.seconds, 3),
        )
        # Aborted while the merger had it: it landed all the same, and says so.
        out.apply(run.graph, merged)
        note_session(run, out, task)
        return
    rejected = ev.TaskRejected(
        task=result.task_id,
        attempt=result.attempt,
        reason=result.reason,
        conflicts=result.conflicts,
        log_tail=result.log_tail,
    )
    out.emit(rejected)
    # A conflict's reason already lists its paths (merger._merge): say them once.
    work.attempt_failed(run, out, result.task_id, f"{result.reason}\n{result.log_tail}".strip())


def already_merged(run: RunState, out: Effects, task_id: str, attempt: int, commit: str) -> None:
    """The task's change is in the target already (at ``commit``): recorded as its own
    outcome, never as a merge, and dependents may start."""
    out.apply(run.graph, ev.TaskAlreadyMerged(task=task_id, attempt=attempt, commit=commit))
    note_session(run, out, run.graph.get(task_id))


def note_session(run: RunState, out: Effects, task: TaskNode) -> None:
    """One line per landed task, which later tasks are shown (``SESSION_LINES``)."""
    summary = " ".join((task.summary or "").split())[:300]
    line = f"{task.id}: {task.title}" + (f" — {summary}" if summary else "")
    run.session.append(line)
    out.append(NoteSession(line))
