"""The run's side of the merge ratchet: finished work goes to the merger in batches the
merge queue chooses, and what each batch's result means for the graph, the target head
and the session log.

A batch lands as one commit only if its merged tree passes the gate; a failing batch is
split until the broken tasks are found, and a task alone is run again before it goes
back to its agent (``gate.retries``), so a flaky test does not cost an attempt. A task
that conflicts, or brings what must not land, leaves the batch at once with the paths or
the reason; a failure of the merger's own machinery is retried without charging anyone.
"""

from __future__ import annotations

from orchestrator.engine.mergequeue import task_of
from orchestrator.engine.runstate import MERGER, RunState
from orchestrator.engine.steps import work
from orchestrator.engine.steps.effects import Effects, NoteSession, Respawn
from orchestrator.gate import Decision, Flaky, Land, Reject
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskNode, TaskState
from orchestrator.wire.messages import (
    BatchResult,
    CancelRun,
    LandRun,
    MergeRequest,
    Message,
    Ready,
    RunLanded,
)


def queue_merge(run: RunState, out: Effects, task: TaskNode, first: bool = False) -> None:
    request = MergeRequest(
        task_id=task.id,
        attempt=task.attempts,
        branch=task.branch or "",
        commit=task.commit or "",
        title=task.title,
    )
    run.merges.add(request, priority=task.critical_path, first=first)
    next_merge(run, out)


def requeue_approved(run: RunState, out: Effects) -> None:
    """On resume: approved work (restored as merging) goes back to the merge queue."""
    for task in run.graph:
        if task.state is TaskState.MERGING:
            queue_merge(run, out, task)


def next_merge(run: RunState, out: Effects) -> None:
    """What the merger is to do next, in this order: stop gates whose results can no
    longer mean anything, land what the queue said lands (before any new batch is built
    on the target head), then start new batches."""
    if run.aborting:
        return  # what the merger has finishes; nothing new starts
    merges = run.merges
    for run_id in merges.cancels:
        out.send(MERGER, CancelRun(run_id))
    for run_id in merges.landings:
        out.send(MERGER, LandRun(run_id))
    merges.cancels, merges.landings = [], []
    for batch in merges.take():
        # Durable before the merger hears of it: a move the merger makes and cannot
        # report (the coordinator died meanwhile) is then still in the record.
        commits = {item["task_id"]: item["commit"] for item in batch.items}
        out.emit(ev.BatchStarted(commits=commits, batch=batch.run_id, on=batch.base_run))
        out.send(MERGER, batch)


def on_merger(run: RunState, out: Effects, message: Message) -> None:
    if isinstance(message, Ready):
        run.merges.merger_ready = not message.error
        if message.error:
            out.emit(ev.MergerFailedToStart(error=message.error))
            run.abort(f"merger failed to start: {message.error}")
    elif isinstance(message, BatchResult):
        batch_result(run, out, message)
    elif isinstance(message, RunLanded):
        run_landed(run, out, message)
    next_merge(run, out)


def merger_died(run: RunState, out: Effects, exitcode: int | None) -> None:
    """What it was merging goes back to the front of the queue, for a fresh merger."""
    lost = run.merges.merger_lost()
    out.emit(ev.MergerCrashed(exitcode=exitcode, task=lost[0] if lost else None))
    if not run.aborting:
        out.append(Respawn(MERGER))


def batch_result(run: RunState, out: Effects, result: BatchResult) -> None:
    merges = run.merges
    flight = merges.running.get(result.run_id)
    if flight is None:
        return  # a batch given up when the merger died, or cancelled
    held = merges.held()
    if merges.parked and result.run_id != merges.parked_run:
        merges.unpark()  # the batch-mate they conflicted with has landed or left
    tasks = flight.tasks()
    if result.infrastructure:  # pd's fault: tried again as they were, first
        del merges.running[result.run_id]
        for task in tasks:
            merges.leave(task)
            if work.infra_failed(run, out, task, result.reason, requeue=False, merger=True):
                queue_merge(run, out, run.graph.get(task), first=True)
        return
    if not result.gated:
        before_the_gate(run, out, result, tasks)
        return
    merges.gate_logs[result.run_id] = (result.reason, result.log_tail)
    tests = result.failed_tests
    for decision in merges.finished(result.run_id, result.passed, result.seconds, tests):
        decide(run, out, decision, result, tasks)
    if result.passed and merges.lands_itself:  # the merger moved the target: all landed
        for task in tasks:
            if task in merges.key_of:
                merged(run, out, task, result.head, result.seconds)
    sweep(run, held)


def run_landed(run: RunState, out: Effects, answer: RunLanded) -> None:
    """The merger moved the target to a tested tree the queue said lands, or could not
    (someone else moved the target since that tree was built: every tree stacked on
    the old head is void, and the queue starts again on the new one)."""
    merges = run.merges
    held = merges.held()
    landing = merges.landed(answer.run_id)
    if landing is None:
        return  # lost with a merger that died
    if answer.moved:
        run.head = answer.head
        for task in landing.tasks():
            if task in merges.key_of:
                merged(run, out, task, answer.head, landing.seconds)
    elif landing.generation == merges.generation:  # (not restarted since it was asked)
        out.emit(ev.MergeRestarted(reason=answer.reason, tasks=sorted(merges.key_of)))
        merges.restart()
    sweep(run, held)


def sweep(run: RunState, held: set[str]) -> None:
    """Tasks aborted while their batch was at the merger leave once it did not land.
    Only tasks the merger ``held`` before its answer can have been kept for that (every
    task in the queue once the run is aborting, which aborts them all): scanning the
    whole queue after every batch cost the loop time in proportion to its backlog."""
    merges = run.merges
    for task in list(merges.key_of) if run.aborting else held:
        if task not in merges.key_of or run.graph.get(task).state is TaskState.MERGING:
            continue
        if not merges.holds(task):
            merges.leave(task)


def before_the_gate(run: RunState, out: Effects, result: BatchResult, tasks: list[str]) -> None:
    """Some tasks left the batch before its gate: each goes where it belongs, and the
    queue plans the others again."""
    run.merges.lost(result.run_id)  # the others are planned again, as they were
    for task in tasks:
        if task in result.deferred:
            run.merges.park(task, result.run_id)
        elif task in result.landed_before:
            merged(run, out, task, result.base)
        elif task in result.already:
            already_merged(run, out, task, run.graph.get(task).attempts, result.base)
        elif task in result.conflicts or task in result.refused:
            paths = result.conflicts.get(task, [])
            target = run.rules.target_branch
            reason = result.refused.get(task) or f"conflict with {target} in: {', '.join(paths)}"
            rejected(run, out, task, reason, conflicts=paths)


def decide(
    run: RunState, out: Effects, decision: Decision, result: BatchResult, tasks: list[str]
) -> None:
    if isinstance(decision, Land):
        run.head = result.head
        for key in decision.ids:
            merged(run, out, task_of(key), result.head, result.seconds)
    elif isinstance(decision, Reject):
        task = task_of(decision.id)
        if run.graph.get(task).state is not TaskState.MERGING:
            run.merges.leave(task)  # aborted meanwhile: nothing to send back
            return
        reason, tail = run.merges.gate_logs.get(decision.run_id, (decision.reason, ""))
        rejected(run, out, task, reason, log_tail=tail)
    elif isinstance(decision, Flaky):  # failed, then passed on the same tree
        seen = run.merges.batches.get(decision.run_id, tasks)
        out.emit(ev.GateFlaky(tasks=seen, tests=sorted(decision.tests)))


def merged(run: RunState, out: Effects, task_id: str, head: str, seconds: float = 0.0) -> None:
    run.merges.leave(task_id)
    task = run.graph.get(task_id)
    landed = ev.TaskMerged(
        task=task_id, attempt=task.attempts, head=head, seconds=round(seconds, 3)
    )
    # Aborted while the merger had it: it landed all the same, and says so.
    out.apply(run.graph, landed)
    note_session(run, out, task)


def rejected(
    run: RunState,
    out: Effects,
    task_id: str,
    reason: str,
    conflicts: list[str] | None = None,
    log_tail: str = "",
) -> None:
    run.merges.leave(task_id)
    attempt = run.graph.get(task_id).attempts
    out.emit(
        ev.TaskRejected(
            task=task_id,
            attempt=attempt,
            reason=reason,
            conflicts=conflicts or [],
            log_tail=log_tail,
        )
    )
    # A conflict's reason already lists its paths: say them once.
    work.attempt_failed(run, out, task_id, f"{reason}\n{log_tail}".strip())


def already_merged(run: RunState, out: Effects, task_id: str, attempt: int, commit: str) -> None:
    """The task's change is in the target already (at ``commit``): recorded as its own
    outcome, never as a merge, and dependents may start."""
    run.merges.leave(task_id)
    out.apply(run.graph, ev.TaskAlreadyMerged(task=task_id, attempt=attempt, commit=commit))
    note_session(run, out, run.graph.get(task_id))


def note_session(run: RunState, out: Effects, task: TaskNode) -> None:
    """One line per landed task, which later tasks are shown (``SESSION_LINES``)."""
    summary = " ".join((task.summary or "").split())[:300]
    line = f"{task.id}: {task.title}" + (f" — {summary}" if summary else "")
    run.session.append(line)
    out.append(NoteSession(line))
