"""``pd plan``: a mission's task graph and critical path, without running anything."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli.output import console, print_json
from orchestrator.cli.run import ADVANCED, _dollars
from orchestrator.record.store import workspace


def plan(
    mission: Annotated[str, typer.Argument(help="Mission file, or a shipped mission's name.")],
    repo: Annotated[str | None, typer.Option(help="Plan for this repository.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    provider: Annotated[str | None, typer.Option(help="Override the mission's provider.")] = None,
    budget: Annotated[
        str | None, typer.Option(help="Most planning may spend, in USD (default: the mission's).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="API server URL.", rich_help_panel=ADVANCED)
    ] = None,
    cassette: Annotated[
        str | None,
        typer.Option(
            help="Replay this cassette (with --provider scripted).", rich_help_panel=ADVANCED
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every tool call.")] = False,
) -> int:
    """Print the task graph and its critical path; a goal mission is planned here first."""
    from orchestrator.engine.preflight import build_plan
    from orchestrator.planning.taskplan import parse_plan, team_of
    from orchestrator.spec.mission import resolve_mission_path

    path = resolve_mission_path(mission)
    run_plan = build_plan(
        path,
        workspace(),
        repo_arg=repo,
        provider=provider,
        base_url=base_url,
        budget=_dollars(budget),
        cassette=cassette,
    )
    data: dict[str, Any] = {"mission": run_plan.mission.name, "planned": False}
    tasks = [t.model_dump(mode="json", exclude_defaults=True) for t in run_plan.mission.tasks]
    if run_plan.planning is not None:

        def on_tool(line: str) -> None:
            if verbose and not as_json:
                console.print(f"  {line}", markup=False, soft_wrap=True)

        from orchestrator.engine.localplan import plan_locally  # a goal mission only

        local = plan_locally(run_plan, on_tool=on_tool)
        tasks = local.tasks
        data.update(planned=True, attempts=local.attempts, summary=local.summary)
        data["spend"] = (local.spend or {}).get("spend")
    team = team_of(run_plan.workers, run_plan.roles)
    _, graph = parse_plan(tasks, team, run_plan.mission.max_attempts)
    data["tasks"] = [{**t, "critical_path": graph.get(t["id"]).critical_path} for t in tasks]
    data["critical_path"] = graph.critical_path()
    if as_json:
        print_json(data)
    else:
        print_plan(data)
    return 0


def print_plan(data: dict[str, Any]) -> None:
    how = f"planned in {data['attempts']} attempt(s)" if data["planned"] else "as written"
    table = Table(
        title=f"{data['mission']}: {len(data['tasks'])} tasks, {how}", title_justify="left"
    )
    for column in ("task", "title", "role", "deps", "files", "path"):
        table.add_column(column)
    for task in data["tasks"]:
        role = task.get("role") or ",".join(task.get("capabilities", [])) or "any"
        table.add_row(
            task["id"] + (" !" if task.get("critical") else ""),
            task["title"],
            role,
            ", ".join(task.get("deps", [])),
            ", ".join(task.get("files", [])),
            str(task["critical_path"]),
        )
    console.print(table)
    console.print("critical path: " + " → ".join(data["critical_path"]), soft_wrap=True)
    if data.get("summary"):
        console.print(f"planner's notes: {data['summary']}", soft_wrap=True)
    spend = data.get("spend")
    if spend:
        budget = f" of ${spend['budget']}" if spend.get("budget") else ""
        console.print(f"planning spent ${spend['spent']}{budget} on {spend['run']['calls']} calls")
