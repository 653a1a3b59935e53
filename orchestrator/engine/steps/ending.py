"""When a run is over, and what it ends as: finished, failed, stalled, stopped by a limit,
planning failed, or aborted."""

from __future__ import annotations

from orchestrator.engine.runstate import RunState
from orchestrator.engine.steps import planning, review
from orchestrator.engine.steps.effects import Effects
from orchestrator.record import events as ev
from orchestrator.tasks.scheduling import fits
from orchestrator.tasks.taskgraph import LANDED, TaskState

# What the tasks still in flight are when an abort ends the run.
_SETTLED = (*LANDED, TaskState.FAILED, TaskState.BLOCKED, TaskState.ABORTED)


def finished(run: RunState) -> bool:
    if run.aborting:
        return True
    if run.planning_open:
        return planning.planning_over(run) is not None
    if run.halted:  # no new work; what is running and merging finishes
        running = run.graph.count(TaskState.RUNNING)
        return not running and not review.reviews_in_flight(run) and run.merges.idle
    return (run.graph.done() and run.merges.idle) or stalled(run)


def stalled(run: RunState) -> bool:
    """No live worker can take any task that is still waiting: the run cannot go on."""
    live = run.live_slots()
    waiting = (TaskState.PENDING, TaskState.RUNNING)  # counted, not scanned: every step
    reviewing = run.graph.count(TaskState.REVIEWING)
    if not run.merges.idle or not (sum(map(run.graph.count, waiting)) or reviewing):
        return False
    if review.reviewable(run, live):
        return False
    tasks = run.graph.any_in(*waiting)
    return not any(fits(t, run.rules.roles[s.role]) for t in tasks for s in live)


def wind_down(run: RunState) -> Effects:
    """Record why a run that is over stopped, and end what it leaves unfinished."""
    out = Effects()
    if run.aborting:
        changed = [t.id for t in run.graph if t.state not in _SETTLED]
        run.graph.abort_all()
        out.emit(ev.RunAborted(reason=run.reason or "", tasks=changed))
    elif run.halted:
        stopped = [t.id for t in run.graph if t.state is TaskState.PENDING]
        run.graph.abort_all()
        out.emit(ev.RunStopped(reason=run.halted, tasks=stopped))
    elif run.planning_open:
        out.emit(ev.RunStalled(reason=planning.planning_over(run)))
    elif stalled(run):
        out.emit(ev.RunStalled(reason="no live worker can take the remaining tasks"))
        run.graph.abort_all()
    return out


def outcome(run: RunState) -> tuple[int, str]:
    """The exit code and the status word of a run that is over."""
    counts = run.graph.counts()
    landed = sum(counts.get(str(state), 0) for state in LANDED)
    merged_all = landed == len(run.graph) and not run.unplanned
    if run.aborting:
        return 130, "aborted"
    if merged_all:
        return 0, "finished"
    if run.halted:
        return 1, "budget exhausted" if "budget exhausted" in run.halted else "stopped"
    if run.unplanned:
        return 1, "planning failed"
    return 1, "failed"
