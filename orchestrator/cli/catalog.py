"""``pd roles`` and ``pd missions``: the shipped catalogs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.output import JSON, console, print_json
from orchestrator.errors import BadInput
from orchestrator.record.store import workspace

if TYPE_CHECKING:
    from orchestrator.team.roles import Role

roles_app = typer.Typer(help="The roles agents can hold.", no_args_is_help=True)
missions_app = typer.Typer(help="The shipped mission templates.", no_args_is_help=True)


def _role_row(role: Role) -> dict[str, Any]:
    return {
        "id": role.id,
        "name": role.name,
        "group": role.group,
        "tier": role.tier,
        "description": role.description,
        "capabilities": role.capabilities,
        "owns": role.owns,
        "skills": role.skills,
        "path": str(role.path) if role.path else None,
    }


@roles_app.command("list")
def roles_list(as_json: JSON = False) -> None:
    """Every role, builders first, with its group, model tier and capabilities."""
    from orchestrator.team.roles import BUILDER, load_roles

    roles = sorted(load_roles(workspace()).values(), key=lambda r: (r.group != BUILDER, r.id))
    if as_json:
        print_json([_role_row(r) for r in roles])
        return
    table = Table("id", "group", "tier", "capabilities", "description")
    for r in roles:
        table.add_row(r.id, r.group, r.tier, ", ".join(r.capabilities), r.description)
    console.print(table)


@roles_app.command("show")
def roles_show(name: str, as_json: JSON = False) -> None:
    """One role's front matter and the system prompt its agents get."""
    from orchestrator.team.roles import load_roles

    roles = load_roles(workspace())
    if name not in roles:
        raise BadInput(name, "no such role", f"use one of: {', '.join(sorted(roles))}")
    role = roles[name]
    if as_json:
        print_json({**_role_row(role), "system_prompt": role.system_prompt()})
        return
    console.print(
        f"[bold]{role.name}[/] ({role.id}) — {role.description}\n"
        f"group: {role.group}; tier: {role.tier}\n"
        f"capabilities: {', '.join(role.capabilities)}\n"
        f"skills: {', '.join(role.skills)}\n"
        f"owns: {', '.join(role.owns)}\n",
        soft_wrap=True,
    )
    console.print(role.system_prompt(), markup=False)


def _mission_files() -> list[Path]:
    from orchestrator.team.catalog import shipped_dir

    return sorted(
        p for p in shipped_dir("missions").glob("*.json") if not p.name.endswith(".cassette.json")
    )


def _mission_row(path: Path, roles: dict[str, Role]) -> dict[str, Any]:
    from orchestrator.spec.composition import check_composition, team_counts
    from orchestrator.spec.mission import load_mission
    from orchestrator.team.roles import BUILDER, COORDINATION

    mission = load_mission(path)
    counts = team_counts(mission, roles)
    return {
        "name": path.stem,
        "description": mission.description,
        "workers": mission.worker_count(),
        "builders": counts[BUILDER],
        "coordination": counts[COORDINATION],
        "budget": str(mission.budget),
        "budget_is_default": mission.budget_is_default,
        "tasks": len(mission.tasks),
        "goal": mission.goal,
        "team": [{"role": m.role, "count": m.count} for m in mission.team],
        "problems": check_composition(mission, roles),
    }


def _budget_text(row: dict[str, Any]) -> str:
    return f"${row['budget']}" + (" (default)" if row["budget_is_default"] else "")


@missions_app.command("list")
def missions_list(as_json: JSON = False) -> None:
    """Every shipped mission: team size, builders:coordination, budget, tasks."""
    from orchestrator.team.roles import load_roles

    roles = load_roles(workspace())
    rows = [_mission_row(path, roles) for path in _mission_files()]
    if as_json:
        print_json(rows)
        return
    table = Table(
        "name",
        "team",
        "budget",
        "tasks",
        "description",
        caption="team: workers (builders:coordination); tasks: planned from the goal at run time",
    )
    for row in rows:
        team = f"{row['workers']} ({row['builders']}:{row['coordination']})"
        tasks = str(row["tasks"]) if row["tasks"] else "planned"
        table.add_row(row["name"], team, _budget_text(row), tasks, row["description"])
    console.print(table)


@missions_app.command("show")
def missions_show(
    name: Annotated[str, typer.Argument(help="A shipped mission's name, or a mission file.")],
    as_json: JSON = False,
) -> None:
    """A mission's team and budget, the team rules it breaks, and its file."""
    from orchestrator.spec.mission import resolve_mission_path
    from orchestrator.team.roles import load_roles

    path = resolve_mission_path(name)
    row = _mission_row(path, load_roles(workspace()))
    raw = json.loads(path.read_text())
    if as_json:
        print_json({**row, "path": str(path), "mission": raw})
        return
    team = ", ".join(f"{m['count']} {m['role']}" for m in row["team"])
    console.print(
        f"[bold]{row['name']}[/] — {row['description']}\n"
        f"team of {row['workers']} ({row['builders']} builders, {row['coordination']} "
        f"coordination): {team}\nbudget: {_budget_text(row)}",
        soft_wrap=True,
    )
    for problem in row["problems"]:
        console.print(f"[yellow]team rule:[/] {escape(problem)}", soft_wrap=True)
    console.print_json(json.dumps(raw))
