"""The coordinator's decisions, as functions: ``step(run, input, now) -> effects``.

Each step changes the ``RunState`` (the only code that does) and returns the effects to
carry out, in order; none does I/O. The modules split the decisions by subject: ``work``
(task attempts and worker health), ``review``, ``merge``, ``planning``, ``control``
(abort, handoff) and ``ending`` (when a run is over and what it ends as).
"""

from __future__ import annotations

from orchestrator.engine.runstate import MERGER, RunState
from orchestrator.engine.steps import control, ending, merge, planning, work
from orchestrator.engine.steps.effects import Effects, Kill
from orchestrator.engine.steps.inputs import Control, Died, Input, Received, Tick
from orchestrator.record import events as ev

__all__ = ["finished", "outcome", "start", "step", "wind_down"]

finished = ending.finished
wind_down = ending.wind_down
outcome = ending.outcome


def step(run: RunState, event: Input, now: float) -> Effects:
    """React to one input; ``now`` is the monotonic clock."""
    out = Effects()
    match event:
        case Tick():
            tick(run, out, event, now)
        case Received(worker=worker, message=message) if worker == MERGER:
            merge.on_merger(run, out, message)
        case Received(worker=worker, message=message):
            work.on_message(run, out, run.slots[worker], message, now)
        case Died(worker=worker, exitcode=exitcode) if worker == MERGER:
            merge.merger_died(run, out, exitcode)
        case Died(worker=worker, exitcode=exitcode):
            work.worker_died(run, out, worker, exitcode)
        case Control(request=request):
            control.on_request(run, out, request)
    return out


def start(run: RunState) -> Effects:
    """A run (new or resumed) begins: approved work restored as merging goes back to the
    merge queue."""
    out = Effects()
    merge.requeue_approved(run, out)
    return out


def tick(run: RunState, out: Effects, event: Tick, now: float) -> None:
    """Once per loop turn: note a limit, stop silent workers, hand out work."""
    if event.halted:
        run.stop(event.halted)
    for worker in event.silent:
        if worker == MERGER:
            continue  # the merger runs long gates without heartbeats; gates time out
        out.emit(ev.HeartbeatMissed(worker=worker, seconds=event.silence))
        out.append(Kill(worker))  # its death comes back as a Died input
    if run.halted or run.aborting:
        return
    if run.planning_open:
        planning.assign_plan(run, out)
        return
    work.assign(run, out, now)
