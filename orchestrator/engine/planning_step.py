"""The coordinator's planning step: before any task exists, a producer plans the goal.

Mixed into ``Coordinator``. The step hands a ``PlanJob`` to an idle producer,
checks the plan that comes back exactly as the worker did, records it as
``plan_accepted`` and only then makes it the run's graph. A failed attempt goes back
to the queue with its reason, up to the mission's ``max_attempts``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.engine.preflight import plan_payload
from orchestrator.engine.snapshot import SlotState
from orchestrator.planning.taskplan import (
    PLAN_ID,
    PlanProblem,
    parse_plan,
    planner_skills,
    team_of,
)
from orchestrator.record import events as ev
from orchestrator.system.worktrees import task_branch
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.team.skills import load_registry
from orchestrator.wire.messages import PlanDone, PlanJob

if TYPE_CHECKING:
    from orchestrator.engine.coordinator import Coordinator
    from orchestrator.engine.snapshot import Slot


class PlanningSteps:
    """Coordinator methods for the planning step (``self.planning``)."""

    def _planning_open(self: Coordinator) -> bool:
        """No task exists yet: the goal is still being planned."""
        return self.planning is not None and self.planning.open

    def _unplanned(self: Coordinator) -> bool:
        return self.planning is not None and self.planning.state != "accepted"

    def _assign_plan(self: Coordinator) -> None:
        step = self.planning
        if step is None or step.state != "pending":
            return
        slot = next(
            (s for s in self.slots.values() if s.state == SlotState.IDLE and s.role == step.role),
            None,
        )
        if slot is None:
            return
        if self._plan_payload is None:
            registry = load_registry(self.plan.workspace)
            skills = planner_skills(self.plan.roles[step.role], registry)
            self._plan_payload = plan_payload(self.plan, skills)
        attempt = step.start(slot.id)
        message = PlanJob(
            task_id=PLAN_ID,
            attempt=attempt,
            branch=task_branch(self.store.run_id, PLAN_ID),
            target_head=self.head,
            feedback=list(step.feedback),
            **self._plan_payload,
        )
        slot.state, slot.task, slot.attempt = SlotState.BUSY, PLAN_ID, attempt
        self.emit(ev.PlanAssigned(task=PLAN_ID, worker=slot.id, attempt=attempt, base=self.head))
        self.pool.send(slot.id, message)

    def _plan_done(self: Coordinator, slot: Slot, message: PlanDone) -> None:
        self._skills_used(slot, message, "plan")
        """Check the plan again (the worker's check is not trusted), record it, adopt it."""
        self._release(slot, message.task_id)
        step = self.planning
        if step is None or step.state != "running":
            return
        team = team_of(self.plan.workers, self.plan.roles)
        try:
            specs, graph = parse_plan(message.tasks, team, self.plan.mission.max_attempts)
        except PlanProblem as exc:
            self._plan_failed(f"the coordinator refused the plan: {exc}", worker=slot.id)
            return
        self.emit(
            ev.PlanAccepted(
                task=PLAN_ID,
                worker=slot.id,
                attempt=message.attempt,
                tasks=[s.model_dump(mode="json", exclude_defaults=True) for s in specs],
                summary=message.summary,
                critical_path=graph.critical_path(),
            )
        )
        step.accepted(len(graph), message.summary)
        self.graph = self.plan.graph = TaskGraph.for_mission(self.plan.mission, specs)

    def _plan_failed(self: Coordinator, reason: str, **extra: Any) -> None:
        step = self.planning
        if step is None or step.state != "running":
            return
        attempt = step.attempts
        state = step.failed(reason)
        self.emit(
            ev.PlanAttemptFailed(task=PLAN_ID, attempt=attempt, reason=reason, state=state, **extra)
        )

    def _planning_over(self: Coordinator) -> str | None:
        """Why the run cannot go on while the goal is unplanned, or None if it can."""
        step = self.planning
        if step is None or step.state == "accepted":
            return None
        if step.state == "failed":
            last = (step.feedback[-1] if step.feedback else "").strip().splitlines()
            return f"planning failed after {step.attempts} attempts: {last[0] if last else ''}"
        if step.state == "running":
            return None  # its attempt ends (done, failed or crashed) before anything else
        if halted := self._halted():
            return halted
        if not any(
            s.role == step.role and s.state != SlotState.RETIRED for s in self.slots.values()
        ):
            return f"no live {step.role} worker is left to plan the goal"
        return None
