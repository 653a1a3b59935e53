"""Planning: a mission's goal becomes a task graph, checked like a hand-written one.

The team's producer plans at run time. A worker runs the agent with read-only skills
and the ``submit_plan`` ending tool, whose check (``PlanCheck``) sends a bad plan back to
the model with the problem, a bounded number of times. The coordinator checks the
accepted plan again, records it (``plan_accepted``) before it schedules any of its tasks,
and ``pd resume`` rebuilds the graph from that record, so a run never plans twice.

Pure logic, no I/O: the tool spec, the check, the prompt and the planning step's life.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from orchestrator.errors import PdError, PlanRejected
from orchestrator.spec.mission import TaskSpec, field_problem
from orchestrator.tasks.scheduling import fits
from orchestrator.tasks.taskgraph import GraphError, TaskGraph
from orchestrator.team.tools import Ending

if TYPE_CHECKING:
    from orchestrator.team.roles import Role

PLAN_ID = "plan"  # the planning step's task id: its transcripts, its branch, its cassette key
PLANNER_ROLE = "producer"
MAX_REJECTED = 3  # rejected submissions per attempt; the last one ends the attempt
# Skills a planner may get: it looks, it never changes the tree or runs commands.
READ_ONLY = ("none", "reads")
BASE_SKILLS = ("read_file", "list_files", "find_files", "search_code", "file_outline")

_STRINGS = {"type": "array", "items": {"type": "string"}}
_TASK = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "Short id: lowercase, digits, '.', '_', '-'."},
        "title": {"type": "string"},
        "description": {"type": "string", "description": "What to do; acceptance criteria."},
        "role": {"type": ["string", "null"], "description": "A role of the team."},
        "capabilities": {**_STRINGS, "description": "Tags a role must have (instead of role)."},
        "deps": {**_STRINGS, "description": "Ids of tasks that must merge first."},
        "files": {**_STRINGS, "description": "Paths the task expects to touch."},
        "priority": {"type": "integer", "description": "Tie-breaker; higher first."},
        "max_attempts": {"type": "integer"},
        "critical": {"type": "boolean", "description": "Its failure would sink the goal."},
    },
    "required": ["id", "title"],
    "additionalProperties": False,
}
PLAN_SPEC: dict[str, Any] = {
    "name": "submit_plan",
    "description": (
        "Submit the whole task graph once you have looked at the repository. A plan with a "
        "problem (a cycle, an unknown role or dependency, a bad field) comes back with the "
        "problem: fix it and submit again."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": _TASK},
            "summary": {"type": "string", "description": "Assumptions and what is left out."},
        },
        "required": ["tasks"],
        "additionalProperties": False,
    },
}


@dataclass(frozen=True)
class TeamRole:
    """A role of the team as the planner sees it (and ``fits`` needs it)."""

    id: str
    capabilities: list[str]
    description: str = ""
    group: str = "builder"
    count: int = 1


def team_of(workers: Iterable[tuple[str, str]], roles: Mapping[str, Role]) -> list[TeamRole]:
    """The roles of the run's workers, in team order, with their counts."""
    counts: dict[str, int] = {}
    for _, role in workers:
        counts[role] = counts.get(role, 0) + 1
    return [
        TeamRole(r, list(roles[r].capabilities), roles[r].description, roles[r].group, n)
        for r, n in counts.items()
    ]


class PlanProblem(PdError):
    """One line the model (or the user) can act on: field, problem and fix."""


def parse_plan(
    tasks: Any, team: Sequence[TeamRole], default_max_attempts: int = 3
) -> tuple[list[TaskSpec], TaskGraph]:
    """Check a plan's tasks exactly like a mission's; raise ``PlanProblem`` at the first
    problem (fields, ids, roles, dependencies, cycles)."""
    if not isinstance(tasks, list) or not tasks:
        raise PlanProblem("tasks: the plan has no tasks (fix: give at least one task)")
    specs = []
    for index, item in enumerate(tasks):
        try:
            specs.append(TaskSpec.model_validate(item))
        except ValidationError as exc:
            where, problem, fix = field_problem(exc.errors()[0], TaskSpec)
            raise PlanProblem(f"tasks[{index}].{where}: {problem} (fix: {fix})") from None
        if specs[-1].id == PLAN_ID:
            raise PlanProblem(
                f"tasks[{index}].id: {PLAN_ID!r} is reserved for the planning step "
                "(fix: choose another id)"
            )
    for index, spec in enumerate(specs):
        _check_role(index, spec, team)
    try:
        graph = TaskGraph(specs, default_max_attempts=default_max_attempts)
    except GraphError as exc:
        raise PlanProblem(str(exc)) from None
    return specs, graph


def _check_role(index: int, spec: TaskSpec, team: Sequence[TeamRole]) -> None:
    ids = ", ".join(r.id for r in team)
    if spec.role and spec.role not in {r.id for r in team}:
        raise PlanProblem(
            f"tasks[{index}].role: role {spec.role!r} is not in the team "
            f"(fix: use one of the team's roles: {ids})"
        )
    if not any(fits(spec, role) for role in team):
        raise PlanProblem(
            f"tasks[{index}].capabilities: no role in the team has all of "
            f"{spec.capabilities} (fix: name a team role ({ids}) or capabilities one has)"
        )


def check_plan(
    given: Mapping[str, Any], team: Sequence[TeamRole], default_max_attempts: int = 3
) -> str | None:
    """The first problem of a ``submit_plan`` input, or None when it is a valid graph."""
    try:
        parse_plan(given.get("tasks"), team, default_max_attempts)
    except PlanProblem as exc:
        return str(exc)
    return None


class PlanCheck:
    """``submit_plan``'s check: a problem goes back to the model, until the ``limit``-th
    rejected plan ends the attempt with that problem."""

    def __init__(
        self, team: Sequence[TeamRole], default_max_attempts: int = 3, limit: int = MAX_REJECTED
    ) -> None:
        self.team, self.default_max_attempts, self.limit = team, default_max_attempts, limit
        self.rejected = 0

    def __call__(self, given: dict[str, Any]) -> str | None:
        problem = check_plan(given, self.team, self.default_max_attempts)
        if problem is None:
            return None
        self.rejected += 1
        if self.rejected >= self.limit:
            raise PlanRejected(f"the plan was rejected {self.rejected} times; last: {problem}")
        left = self.limit - self.rejected
        return (
            f"plan rejected: {problem}. Fix the plan and call submit_plan again "
            f"({left} more rejected plan{'s' if left > 1 else ''} end the attempt)."
        )


def planner_ending(payload: Mapping[str, Any]) -> Ending:
    team = [TeamRole(**r) for r in payload["team"]]
    return Ending(PLAN_SPEC, PlanCheck(team, int(payload.get("max_attempts", 3))))


def planner_skills(role: Role, registry: Any) -> list[str]:
    """The planner's skills: the base read-only set plus the role's read-only ones."""
    wanted = [*BASE_SKILLS, *(s for s in role.skills if s not in BASE_SKILLS)]
    return [
        s for s in wanted if s in registry.skills and registry.skills[s].side_effects in READ_ONLY
    ]


def plan_prompt(payload: Mapping[str, Any], feedback: Sequence[str] = ()) -> str:
    """The planner's first message: goal, team, draft, how to answer, earlier failures."""
    team = "\n".join(
        f"- {r['id']} ({r['count']} worker{'s' if r['count'] > 1 else ''}, {r['group']}): "
        f"{r['description']} Capabilities: {', '.join(r['capabilities']) or 'none'}."
        for r in payload["team"]
    )
    parts = [
        f"# Plan the mission {payload['mission']}",
        f"## Goal\n{payload['goal']}",
        payload.get("description") or "",
        f"## The team\n{team}",
    ]
    if payload.get("draft"):
        draft = json.dumps(payload["draft"], indent=1)
        parts.append(f"## Draft tasks: refine them (keep, split, merge or drop)\n{draft}")
    parts.append(
        "## How to answer\nLook at the repository with your tools, then call `submit_plan` "
        "once with the whole task graph. Each task: an id (lowercase letters, digits, '.', "
        "'_' or '-'), a title, a description with acceptance criteria, the team role that "
        "takes it (or the capability tags it needs), the ids it depends on (only real "
        "dependencies: they merge before it starts), the files it expects to touch, and "
        f"whether it is critical. Every merge must pass `{payload.get('gate')}`."
    )
    if feedback:
        notes = "\n\n".join(f"Attempt {i} failed:\n{t}" for i, t in enumerate(feedback, 1))
        parts.append(f"## Earlier planning attempts failed; avoid their problems\n{notes}")
    return "\n\n".join(p for p in parts if p)


@dataclass
class PlanningStep:
    """The planning step's life: pending -> running -> accepted, or back to pending on a
    failed attempt until ``max_attempts``, then failed."""

    role: str = PLANNER_ROLE
    max_attempts: int = 3
    state: str = "pending"  # pending | running | accepted | failed
    attempts: int = 0
    feedback: list[str] = field(default_factory=list)
    worker: str | None = None
    tasks: int = 0
    summary: str = ""

    @property
    def open(self) -> bool:
        """Still to plan: no task exists yet."""
        return self.state in ("pending", "running")

    def start(self, worker: str) -> int:
        if self.state != "pending":
            raise ValueError(f"cannot start planning: it is {self.state}")
        self.state, self.worker = "running", worker
        self.attempts += 1
        return self.attempts

    def failed(self, reason: str) -> str:
        self.feedback.append(reason)
        self.worker = None
        self.state = "pending" if self.attempts < self.max_attempts else "failed"
        return self.state

    def accepted(self, tasks: int, summary: str) -> None:
        self.state, self.tasks, self.summary = "accepted", tasks, summary

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "role": self.role,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "worker": self.worker,
            "tasks": self.tasks,
            "summary": self.summary,
            "last_failure": self.feedback[-1] if self.feedback else None,
        }
