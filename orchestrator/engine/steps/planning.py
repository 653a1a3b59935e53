"""The planning step: before any task exists, a producer plans the goal.

An idle producer gets a ``PlanJob``; the plan that comes back is checked again here (the
worker's check is not trusted), recorded as ``plan_accepted`` and only then made the
run's graph. A failed attempt goes back to the queue with its reason, up to the
mission's ``max_attempts``.
"""

from __future__ import annotations

from orchestrator.engine.runstate import RunState, Slot, SlotState
from orchestrator.engine.steps.effects import Effects
from orchestrator.planning.taskplan import PLAN_ID, PlanProblem, parse_plan, team_of
from orchestrator.record import events as ev
from orchestrator.system.worktrees import task_branch
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.wire.messages import PlanDone, PlanJob


def assign_plan(run: RunState, out: Effects) -> None:
    step = run.planning
    if step is None or step.state != "pending" or run.plan_payload is None:
        return
    slot = next(
        (s for s in run.slots.values() if s.state == SlotState.IDLE and s.role == step.role),
        None,
    )
    if slot is None:
        return
    attempt = step.start(slot.id)
    message = PlanJob(
        task_id=PLAN_ID,
        attempt=attempt,
        branch=task_branch(run.rules.run_id, PLAN_ID),
        target_head=run.head,
        feedback=list(step.feedback),
        **run.plan_payload,
    )
    slot.state, slot.task, slot.attempt = SlotState.BUSY, PLAN_ID, attempt
    out.emit(ev.PlanAssigned(task=PLAN_ID, worker=slot.id, attempt=attempt, base=run.head))
    out.send(slot.id, message)


def plan_done(run: RunState, out: Effects, slot: Slot, message: PlanDone) -> None:
    """Check the plan again, record it, adopt it."""
    step = run.planning
    if step is None or step.state != "running":
        return
    team = team_of(run.rules.workers, run.rules.roles)
    try:
        specs, graph = parse_plan(message.tasks, team, run.rules.mission.max_attempts)
    except PlanProblem as exc:
        plan_failed(run, out, f"the coordinator refused the plan: {exc}", worker=slot.id)
        return
    accepted = ev.PlanAccepted(
        task=PLAN_ID,
        worker=slot.id,
        attempt=message.attempt,
        tasks=[s.model_dump(mode="json", exclude_defaults=True) for s in specs],
        summary=message.summary,
        critical_path=graph.critical_path(),
    )
    out.emit(accepted)
    step.accepted(len(graph), message.summary)
    run.graph = TaskGraph.for_mission(run.rules.mission, specs)


def plan_failed(run: RunState, out: Effects, reason: str, worker: str = "") -> None:
    step = run.planning
    if step is None or step.state != "running":
        return
    attempt = step.attempts
    state = step.failed(reason)
    extra = {"worker": worker} if worker else {}
    failed = ev.PlanAttemptFailed(
        task=PLAN_ID, attempt=attempt, reason=reason, state=state, **extra
    )
    out.emit(failed)


def planning_over(run: RunState) -> str | None:
    """Why the run cannot go on while the goal is unplanned, or None if it can."""
    step = run.planning
    if step is None or step.state == "accepted":
        return None
    if step.state == "failed":
        last = (step.feedback[-1] if step.feedback else "").strip().splitlines()
        return f"planning failed after {step.attempts} attempts: {last[0] if last else ''}"
    if step.state == "running":
        return None  # its attempt ends (done, failed or crashed) before anything else
    if run.halted:
        return run.halted
    if not any(s.role == step.role for s in run.live_slots()):
        return f"no live {step.role} worker is left to plan the goal"
    return None
