"""``pd roles`` and ``pd missions``: the shipped catalogs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli.output import console, print_json
from orchestrator.errors import BadInput
from orchestrator.mission import load_mission, shipped_dir
from orchestrator.roles import load_roles
from orchestrator.store import workspace

roles_app = typer.Typer(help="The roles agents can hold.", no_args_is_help=True)
missions_app = typer.Typer(help="The shipped mission templates.", no_args_is_help=True)
JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@roles_app.command("list")
def roles_list(as_json: JSON = False) -> None:
    """Every role, with its capabilities and model tier."""
    roles = load_roles(workspace())
    if as_json:
        print_json(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "description": r.description,
                    "capabilities": r.capabilities,
                    "tier": r.tier,
                }
                for r in roles.values()
            ]
        )
        return
    table = Table("id", "name", "tier", "capabilities", "description")
    for r in roles.values():
        table.add_row(r.id, r.name, r.tier, ", ".join(r.capabilities), r.description)
    console.print(table)


@roles_app.command("show")
def roles_show(name: str) -> None:
    """One role's front matter and prompt."""
    roles = load_roles(workspace())
    if name not in roles:
        raise BadInput(name, "no such role", f"use one of: {', '.join(sorted(roles))}")
    role = roles[name]
    console.print(
        f"[bold]{role.name}[/] ({role.id}) — {role.description}\n"
        f"capabilities: {', '.join(role.capabilities)}; tier: {role.tier}; "
        f"owns: {', '.join(role.owns)}\n"
    )
    console.print(role.system_prompt(), markup=False)


def _mission_files() -> list:
    return sorted(
        p for p in shipped_dir("missions").glob("*.json") if not p.name.endswith(".cassette.json")
    )


@missions_app.command("list")
def missions_list(as_json: JSON = False) -> None:
    """Every shipped mission with its team size and task count."""
    rows = []
    for path in _mission_files():
        mission = load_mission(path)
        rows.append(
            {
                "name": path.stem,
                "description": mission.description,
                "workers": mission.worker_count(),
                "tasks": len(mission.tasks),
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("name", "workers", "tasks", "description")
    for row in rows:
        table.add_row(row["name"], str(row["workers"]), str(row["tasks"]), row["description"])
    console.print(table)


@missions_app.command("show")
def missions_show(name: str) -> None:
    """A shipped mission's file."""
    path = shipped_dir("missions") / f"{name}.json"
    if not path.is_file():
        names = ", ".join(p.stem for p in _mission_files())
        raise BadInput(name, "no such mission", f"use one of: {names}")
    console.print_json(json.dumps(json.loads(path.read_text())))
