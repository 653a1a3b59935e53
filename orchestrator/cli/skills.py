"""``pd skills``: the skill catalog (shipped ``skills/`` plus the workspace's)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from orchestrator.cli.output import JSON, console, print_json
from orchestrator.record.store import workspace

if TYPE_CHECKING:
    from orchestrator.team.skills.registry import Skill

skills_app = typer.Typer(help="The skills (tools) agents can be given.", no_args_is_help=True)


def _row(skill: Skill) -> dict[str, object]:
    return {
        "id": skill.id,
        "category": skill.category,
        "side_effects": skill.side_effects,
        "tags": skill.tags,
        "short_description": skill.short_description,
    }


def _table(skills: list[Skill], as_json: bool) -> None:
    if as_json:
        print_json([_row(s) for s in skills])
        return
    table = Table("id", "category", "side effects", "description")
    for s in skills:
        table.add_row(s.id, s.category, s.side_effects, s.short_description)
    console.print(table)


@skills_app.command("list")
def skills_list(as_json: JSON = False) -> None:
    """Every skill, with its category and side effects."""
    from orchestrator.team.skills.registry import load_registry

    _table(sorted(load_registry(workspace()).skills.values(), key=lambda s: s.id), as_json)


@skills_app.command("search")
def skills_search(query: str, as_json: JSON = False) -> None:
    """Skills matching QUERY, best first (what discover_skills would offer)."""
    from orchestrator.team.skills.registry import load_registry

    found = load_registry(workspace()).search(query)
    if not found and not as_json:
        console.print(f"no skill matches {query!r}")
        return
    _table(found, as_json)


@skills_app.command("show")
def skills_show(
    skill_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JSON = False
) -> None:
    """One skill's manifest."""
    from orchestrator.team.skills.registry import load_registry

    skill = load_registry(workspace()).get(skill_id)
    if as_json:
        print_json(skill.to_dict())
        return
    relations = {k: getattr(skill, k) for k in ("requires", "conflicts", "enhanced_by")}
    related = "; ".join(f"{k}: {', '.join(v)}" for k, v in relations.items() if v) or "-"
    flags = [f"side effects: {skill.side_effects}", f"idempotent: {skill.idempotent}"]
    if skill.requires_confirmation:
        flags.append("asks for confirm: true")
    console.print(
        f"[bold]{skill.name}[/] ({skill.id} {skill.version}, {skill.category}) — "
        f"{skill.short_description}\n{skill.description}\n"
        f"tags: {', '.join(skill.tags)}\n{'; '.join(flags)}\n{related}\n"
        f"handler: {skill.handler}\nexamples: {' | '.join(skill.trigger_examples)}",
        soft_wrap=True,
    )
    console.print_json(data=skill.parameters)
