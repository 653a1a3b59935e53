"""Team rules: who a mission needs, how builders and coordinators balance, what it costs.

Pure functions, no I/O. A role is either a *builder* (writes the code, tests and docs
that merge) or *coordination* (plans, designs, reviews, releases). The rules:

- every mission has a producer (plans the goal), a tech-lead (reviews) and a
  self-reviewer (checks each diff against its task);
- builders outnumber coordinators about 2:1: at least 1.5 and at most 3 builder workers
  per coordination worker. Fewer builders and the reviewers wait for work; more and the
  reviewers become the bottleneck;
- a mission without a ``budget`` gets ``default_budget(team size)``;
- coordination roles default to the cheap tier, builders to the balanced one, and a task
  marked critical or failed repeatedly escalates to the top tier (``tier_for``).

Shipped missions must follow the rules (a test checks each); ``pd validate`` reports a
user mission's problems as warnings, so a small hand-written team still runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from orchestrator.team.roles import (
    BUILDER,
    COORDINATION,
    GROUPS,
    TOP_TIER,
    Role,
)

if TYPE_CHECKING:
    from orchestrator.spec.mission import Mission

REQUIRED_ROLES = {
    "producer": "it plans the goal into tasks",
    "tech-lead": "it reviews finished work before it merges",
    "self-reviewer": "it checks each diff against its task",
}
MIN_BUILDERS_PER_COORDINATOR = Decimal("1.5")
MAX_BUILDERS_PER_COORDINATOR = Decimal(3)

# (team size, USD): the budget for a mission that names none. Between the points the
# budget is linear; below the first it keeps the first point's cost per agent but never
# drops under BUDGET_FLOOR (one agent still has to finish real tasks); past the last it
# goes on with the last segment's cost per agent.
BUDGET_POINTS = ((6, Decimal(10)), (10, Decimal(20)), (13, Decimal(30)))
BUDGET_FLOOR = Decimal(5)
CENT = Decimal("0.01")


def default_budget(team_size: int) -> Decimal:
    """USD for a run of ``team_size`` agents: $10 for 6, $20 for 10, $30 for 13."""
    if team_size < 1:
        raise ValueError(f"a team has at least one agent, not {team_size}")
    (x0, y0), *_ = BUDGET_POINTS
    if team_size <= x0:
        value = max(BUDGET_FLOOR, y0 * team_size / x0)
    else:
        segments = list(itertools.pairwise(BUDGET_POINTS))
        (xa, ya), (xb, yb) = next(((a, b) for a, b in segments if team_size <= b[0]), segments[-1])
        value = ya + (yb - ya) * (team_size - xa) / (xb - xa)
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def tier_for(
    role_tier: str, task_critical: bool, attempt: int, failures_before_escalation: int = 2
) -> str:
    """The model tier for one attempt: the top tier for a critical task, or once the task
    has failed ``failures_before_escalation`` times; otherwise the role's own tier (which
    may be an exact model id). ``attempt`` counts from 1, as the task graph does."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    if failures_before_escalation < 0:
        raise ValueError("failures_before_escalation must be 0 or more")
    if task_critical or attempt - 1 >= failures_before_escalation:
        return TOP_TIER
    return role_tier


def team_counts(mission: Mission, roles: Mapping[str, Role]) -> dict[str, int]:
    """Workers per group (``builder``, ``coordination``); roles not in ``roles`` are left
    out (preflight reports them)."""
    counts = dict.fromkeys(GROUPS, 0)
    for member in mission.team:
        role = roles.get(member.role)
        if role is not None:
            counts[role.group] += member.count
    return counts


def check_composition(mission: Mission, roles: Mapping[str, Role]) -> list[str]:
    """The team rules this mission breaks, one line each (field: problem (fix: ...))."""
    problems = []
    for i, member in enumerate(mission.team):
        if member.role not in roles:
            problems.append(
                f"team[{i}].role: unknown role '{member.role}' (fix: use one of the roles "
                "listed by `pd roles list`)"
            )
    present = {member.role for member in mission.team}
    for role_id, why in REQUIRED_ROLES.items():
        if role_id not in present:
            problems.append(f'team: no {role_id}, {why} (fix: add {{"role": "{role_id}"}} to team)')
    counts = team_counts(mission, roles)
    builders, coordinators = counts[BUILDER], counts[COORDINATION]
    if coordinators and builders < MIN_BUILDERS_PER_COORDINATOR * coordinators:
        wanted = math.ceil(MIN_BUILDERS_PER_COORDINATOR * coordinators)
        problems.append(
            f"team: {builders} builder workers for {coordinators} coordination workers; "
            f"builders should outnumber them about 2:1 (fix: at least {wanted} builders, "
            "or fewer coordination roles)"
        )
    if coordinators and builders > MAX_BUILDERS_PER_COORDINATOR * coordinators:
        wanted = math.ceil(builders / MAX_BUILDERS_PER_COORDINATOR)
        problems.append(
            f"team: {builders} builder workers for {coordinators} coordination workers; "
            f"review becomes the bottleneck past 3:1 (fix: at least {wanted} coordination "
            "workers, e.g. a code-reviewer)"
        )
    return problems
