"""The missions catalog and the team rules: composition, default budgets, tier escalation."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.errors import BadInput
from orchestrator.spec.composition import (
    check_composition,
    default_budget,
    team_counts,
    tier_for,
)
from orchestrator.spec.mission import TASK_ID_PATTERN, Mission, TaskSpec, load_mission
from orchestrator.team.catalog import shipped_dir
from orchestrator.team.roles import TOP_TIER, load_roles
from tests.conftest import pd

MISSION_FILES = sorted(
    p for p in shipped_dir("missions").glob("*.json") if not p.name.endswith(".cassette.json")
)
ROLES = load_roles()


def mission(*team: tuple[str, int], **fields: object) -> Mission:
    members = [{"role": role, "count": count} for role, count in team]
    return Mission.model_validate({"name": "m", "team": members, **fields})


LEADS = (("producer", 1), ("tech-lead", 1), ("self-reviewer", 1))


# ---- shipped missions -------------------------------------------------------------------


def test_the_catalog_ships_every_mission() -> None:
    names = {p.stem for p in MISSION_FILES}
    assert names >= {"web-app", "api-service", "library", "bugfix-sprint", "refactor"}
    assert names >= {"full-team", "demo"}


@pytest.mark.parametrize("path", MISSION_FILES, ids=lambda p: p.stem)
def test_every_shipped_mission_follows_the_team_rules(path: Path) -> None:
    loaded = load_mission(path)
    assert check_composition(loaded, ROLES) == []
    assert loaded.tasks or loaded.goal, "a mission needs tasks or a goal to plan"
    assert all(task.role in ROLES for task in loaded.tasks if task.role)
    if "budget" not in json.loads(path.read_text()):
        assert loaded.budget == default_budget(loaded.worker_count())


@pytest.mark.parametrize("path", MISSION_FILES, ids=lambda p: p.stem)
def test_a_shipped_mission_with_a_broken_field_names_file_and_field(
    tmp_path: Path, path: Path
) -> None:
    data = json.loads(path.read_text())
    data["team"][0]["count"] = 0
    broken = tmp_path / path.name
    broken.write_text(json.dumps(data))
    with pytest.raises(BadInput) as caught:
        load_mission(broken)
    message = str(caught.value)
    assert "\n" not in message and path.name in message and "team[0].count" in message


def test_full_team_is_thirteen_agents_for_thirty_dollars() -> None:
    full = load_mission(shipped_dir("missions") / "full-team.json")
    assert full.worker_count() == 13 and full.budget == Decimal(30) and full.budget_is_default


# ---- composition rules ------------------------------------------------------------------


def test_a_balanced_team_has_no_problems() -> None:
    team = mission(*LEADS, ("backend-dev", 4), ("qa-engineer", 1))
    assert check_composition(team, ROLES) == []
    assert team_counts(team, ROLES) == {"builder": 5, "coordination": 3}


@pytest.mark.parametrize("missing", ["producer", "tech-lead", "self-reviewer"])
def test_a_team_without_a_lead_role_is_told_which(missing: str) -> None:
    team = mission(*(m for m in LEADS if m[0] != missing), ("backend-dev", 4))
    problems = check_composition(team, ROLES)
    assert len(problems) == 1 and f"no {missing}" in problems[0]
    assert f'{{"role": "{missing}"}}' in problems[0]  # the fix says what to add


def test_too_many_coordinators_for_the_builders() -> None:
    team = mission(*LEADS, ("architect", 1), ("code-reviewer", 1), ("backend-dev", 7))
    problems = check_composition(team, ROLES)
    assert len(problems) == 1 and "7 builder workers for 5 coordination" in problems[0]
    assert "at least 8 builders" in problems[0]  # 1.5 x 5, rounded up
    assert check_composition(mission(*LEADS, ("backend-dev", 5)), ROLES) == []  # 1.67:1


def test_too_many_builders_for_the_reviewers() -> None:
    problems = check_composition(mission(*LEADS, ("backend-dev", 10)), ROLES)
    assert len(problems) == 1 and "bottleneck" in problems[0]
    assert "at least 4 coordination" in problems[0]
    assert check_composition(mission(*LEADS, ("backend-dev", 9)), ROLES) == []  # 3:1


def test_the_readme_example_team_only_warns() -> None:
    """Small hand-written teams break the rules; composition problems are reported, they
    do not stop the mission from loading (``pd validate`` shows them as warnings)."""
    example = mission(("backend-dev", 2), ("qa-engineer", 1))
    problems = check_composition(example, ROLES)
    assert [p.split(",")[0] for p in problems] == [
        "team: no producer",
        "team: no tech-lead",
        "team: no self-reviewer",
    ]


def test_an_unknown_role_is_a_problem_not_a_crash() -> None:
    problems = check_composition(mission(*LEADS, ("wizard", 5)), ROLES)
    assert problems[0].startswith("team[3].role: unknown role 'wizard'")


# ---- default budget ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "usd"),
    [
        (1, "5.00"),  # the floor
        (3, "5.00"),
        (4, "6.67"),  # $10 / 6 per agent
        (6, "10"),
        (8, "15"),
        (10, "20"),
        (13, "30"),
        (14, "33.33"),  # the last segment's $10 / 3 per agent
        (16, "40"),
    ],
)
def test_default_budget_figures(size: int, usd: str) -> None:
    assert default_budget(size) == Decimal(usd)


@given(st.integers(1, 200), st.integers(1, 200))
def test_default_budget_grows_with_the_team(a: int, b: int) -> None:
    small, large = sorted((a, b))
    assert default_budget(small) <= default_budget(large)
    assert default_budget(large) == default_budget(large).quantize(Decimal("0.01"))
    if small < large and large > 3:
        assert default_budget(small) < default_budget(large)


def test_default_budget_needs_a_team() -> None:
    with pytest.raises(ValueError):
        default_budget(0)


def test_a_mission_without_budget_gets_the_default_and_a_given_one_stays() -> None:
    ten = (("backend-dev", 7), *LEADS)
    assert mission(*ten).budget == Decimal(20) and mission(*ten).budget_is_default
    given_budget = mission(*ten, budget="2.5")
    assert given_budget.budget == Decimal("2.5") and not given_budget.budget_is_default
    assert mission(*ten, budget=0).budget == 0  # zero is a budget, not "none"


# ---- model tiers ------------------------------------------------------------------------


def test_tier_for_escalates_critical_tasks_and_repeated_failures() -> None:
    assert tier_for("haiku", task_critical=False, attempt=1) == "haiku"
    assert tier_for("sonnet", task_critical=False, attempt=2) == "sonnet"
    assert tier_for("sonnet", task_critical=False, attempt=3) == TOP_TIER == "opus"
    assert tier_for("haiku", task_critical=True, attempt=1) == "opus"
    assert tier_for("haiku", False, 2, failures_before_escalation=1) == "opus"
    assert tier_for("haiku", False, 1, failures_before_escalation=0) == "opus"
    assert tier_for("gpt-4.1", False, 1) == "gpt-4.1"  # an exact id passes through
    with pytest.raises(ValueError):
        tier_for("haiku", False, 0)


@given(
    st.sampled_from(["haiku", "sonnet", "opus", "qwen3"]),
    st.booleans(),
    st.integers(1, 20),
    st.integers(0, 10),
)
def test_once_escalated_a_task_stays_on_the_top_tier(
    tier: str, critical: bool, attempt: int, threshold: int
) -> None:
    now = tier_for(tier, critical, attempt, threshold)
    assert now in (tier, TOP_TIER)
    if now == TOP_TIER:
        assert tier_for(tier, critical, attempt + 1, threshold) == TOP_TIER


def test_tasks_can_be_marked_critical() -> None:
    assert TaskSpec(id="schema", title="Schema", critical=True).critical
    assert not TaskSpec(id="docs", title="Docs").critical


# ---- CLI --------------------------------------------------------------------------------


def test_missions_list_and_show_report_team_split_and_budget(tmp_path: Path) -> None:
    rows = json.loads(pd("missions", "list", "--json", cwd=tmp_path, check=True).stdout)
    web = next(r for r in rows if r["name"] == "web-app")
    assert (web["workers"], web["builders"], web["coordination"]) == (10, 7, 3)
    assert web["budget"] == "20.00" and web["budget_is_default"] and web["problems"] == []
    shown = pd("missions", "show", "full-team", cwd=tmp_path, check=True).stdout
    assert "team of 13 (9 builders, 4 coordination)" in shown and "$30.00 (default)" in shown


def test_missions_show_warns_about_a_user_missions_team(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "team": [{"role": "backend-dev"}]}))
    result = pd("missions", "show", str(path), cwd=tmp_path, check=True)
    assert "team rule: team: no producer" in result.stdout
    data = json.loads(pd("missions", "show", str(path), "--json", cwd=tmp_path).stdout)
    assert data["budget"] == "5.00" and len(data["problems"]) == 3


def test_roles_list_shows_group_and_tier(tmp_path: Path) -> None:
    rows = json.loads(pd("roles", "list", "--json", cwd=tmp_path, check=True).stdout)
    by_id = {r["id"]: r for r in rows}
    assert by_id["producer"]["group"] == "coordination" and by_id["producer"]["tier"] == "haiku"
    assert by_id["backend-dev"]["group"] == "builder" and by_id["backend-dev"]["tier"] == "sonnet"
    assert [r["group"] for r in rows] == sorted((r["group"] for r in rows), key="builder".__ne__)
    shown = json.loads(pd("roles", "show", "tech-lead", "--json", cwd=tmp_path).stdout)
    assert "## Handoff format" in shown["system_prompt"] and shown["skills"]


# Ids made of the characters git's rules are about ('.', "lock"), and any id at all.
PIECES = st.sampled_from(["a", "1", ".", ".lock", "lock", "-", "_"])
DOTTY_IDS = st.lists(PIECES, min_size=1, max_size=6).map("".join).filter(lambda s: s[0] in "a1l")


@settings(max_examples=300, deadline=None)
@given(st.one_of(DOTTY_IDS, st.from_regex(TASK_ID_PATTERN, fullmatch=True)))
def test_a_task_id_passes_exactly_when_git_takes_its_branch(task_id: str) -> None:
    git = subprocess.run(
        ["git", "check-ref-format", "--branch", f"pd/20250101-000000-abcd/{task_id}"],
        capture_output=True,
    )
    try:
        TaskSpec(id=task_id, title="t")
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (git.returncode == 0), task_id
