"""The team side of preflight: roles that exist, a task graph, a worker for every task,
a producer for a planned goal and a reviewer where review is on.

These checks read only the mission and the roles, never git or the disk (that is
``repocheck``'s job); each raises a one-line ``BadInput``.
"""

from __future__ import annotations

from orchestrator.agent.reviewer import REVIEWS
from orchestrator.errors import BadInput
from orchestrator.planning.taskplan import PLAN_ID, PLANNER_ROLE, PlanningStep
from orchestrator.spec.mission import Mission
from orchestrator.tasks.scheduling import fits
from orchestrator.tasks.taskgraph import GraphError, TaskGraph
from orchestrator.team.roles import Role


def check_roles(mission: Mission, roles: dict[str, Role], where: str) -> None:
    known = ", ".join(sorted(roles))
    for i, member in enumerate(mission.team):
        if member.role not in roles:
            raise BadInput(
                where, f"unknown role '{member.role}'", f"use one of: {known}", f"team[{i}].role"
            )
    for i, task in enumerate(mission.tasks):
        if task.role and task.role not in roles:
            raise BadInput(
                where, f"unknown role '{task.role}'", f"use one of: {known}", f"tasks[{i}].role"
            )


def check_graph(mission: Mission, where: str) -> TaskGraph:
    """The mission's graph; empty for a planned mission (its tasks, if any, are a draft,
    checked all the same)."""
    if mission.planned and not (mission.goal or "").strip():
        raise BadInput(where, "planning needs a goal", "add a goal, or set plan to false", "goal")
    if not mission.tasks and not mission.planned:
        fix = "add a tasks list, or a goal for the producer to plan"
        raise BadInput(where, "the mission has no tasks", fix, "tasks")
    try:
        graph = TaskGraph.for_mission(mission, mission.tasks)
    except GraphError as exc:
        raise BadInput(where, exc.problem, exc.fix, exc.field) from None
    if any(t.id == PLAN_ID for t in mission.tasks) and mission.planned:
        index = next(i for i, t in enumerate(mission.tasks) if t.id == PLAN_ID)
        fix = "choose another id"
        raise BadInput(where, f"{PLAN_ID!r} is the planning step's id", fix, f"tasks[{index}].id")
    return TaskGraph([]) if mission.planned else graph


def check_planning(
    mission: Mission, team: list[tuple[str, str]], workers: int | None, where: str
) -> PlanningStep | None:
    """A planned mission needs a producer worker and a provider that can take a tool."""
    if not mission.planned:
        return None
    if PLANNER_ROLE not in {role for _, role in team}:
        if workers is not None and any(m.role == PLANNER_ROLE for m in mission.team):
            raise BadInput(
                "--workers",
                f"the first {workers} workers leave out the {PLANNER_ROLE}, who plans the goal",
                f"raise --workers or list the {PLANNER_ROLE} first in team",
            )
        raise BadInput(
            where,
            f"the goal is planned by the {PLANNER_ROLE} role, and the team has none",
            f'add {{"role": "{PLANNER_ROLE}"}} to team, or list the tasks',
            "team",
        )
    if mission.provider.name == "command":
        raise BadInput(
            where,
            "a coding-agent CLI cannot plan a goal (planning needs the submit_plan tool)",
            "list the tasks, or plan with `pd plan` and another provider",
            "provider.name",
        )
    return PlanningStep(PLANNER_ROLE, mission.max_attempts)


def team_slots(mission: Mission, workers: int | None) -> list[tuple[str, str]]:
    """Worker ids and roles: w1..wN in team order; ``--workers`` caps the count."""
    slots = [member.role for member in mission.team for _ in range(member.count)]
    if workers is not None:
        if workers < 1:
            raise BadInput("--workers", f"{workers} is not a worker count", "use 1 or more")
        slots = slots[:workers]
    return [(f"w{i}", role) for i, role in enumerate(slots, 1)]


def check_assignable(
    mission: Mission, roles: dict[str, Role], team: list[tuple[str, str]], where: str
) -> None:
    team_roles = [roles[role] for _, role in team]
    for i, task in enumerate(mission.tasks):
        if not any(fits(task, role) for role in team_roles):
            need = f"role '{task.role}'" if task.role else f"capabilities {task.capabilities}"
            raise BadInput(
                where,
                f"no worker in the team can take it (it needs {need})",
                "add a fitting role to team (or raise --workers)",
                f"tasks[{i}].role" if task.role else f"tasks[{i}].capabilities",
            )


def check_reviewers(mission: Mission, team: list[Role], where: str) -> None:
    """Review needs a worker whose role reviews code, and a model that can submit a
    verdict (a coding-agent CLI cannot call submit_review)."""
    reviewed = [
        i for i, t in enumerate(mission.tasks) if (mission.review if t.review is None else t.review)
    ]
    if not reviewed:
        return
    field = "review" if mission.review else f"tasks[{reviewed[0]}].review"
    if mission.provider.name == "command":
        raise BadInput(
            where,
            "review needs pd's own agent loop; the command provider cannot review",
            "turn review off or use a model provider",
            field,
        )
    if not any(REVIEWS in role.capabilities for role in team):
        raise BadInput(
            where,
            f"review is on but no role in the team has the {REVIEWS} capability",
            "add a reviewer to team, e.g. tech-lead or code-reviewer, or turn review off",
            field,
        )
