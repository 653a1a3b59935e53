"""The ``pd`` entry point: builds the Typer app and turns errors into one line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.cli import abort, catalog, gate, handoff, logs, plan, report, run, skills, status
from orchestrator.cli.output import RUN, console, fail_line, say
from orchestrator.errors import PdError
from orchestrator.record.store import workspace

app = typer.Typer(
    name="pd",
    help="Run a team of AI coding agents in parallel on one git repository, safely.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(run.run)
app.command()(run.resume)
app.command()(run.demo)
app.command()(status.status)
app.command()(logs.logs)


@app.command(name="abort")
def abort_command(
    run_id: RUN = None,
    task: Annotated[str | None, typer.Option(help="Abort only this task.")] = None,
    worker: Annotated[str | None, typer.Option(help="Stop only this worker.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the coordinator.")] = abort.WAIT,
) -> int:
    """Ask the live coordinator to stop; clean up after a dead one."""
    return abort.stop(run_id, task, worker, wait, say=console.print)


app.command()(handoff.handoff)
app.command()(gate.gate)
app.command()(report.report)
app.command()(plan.plan)
app.add_typer(catalog.roles_app, name="roles")
app.add_typer(catalog.missions_app, name="missions")
app.add_typer(skills.skills_app, name="skills")


@app.command()
def validate(
    mission: Annotated[str, typer.Argument(help="Mission file, or a shipped mission's name.")],
    repo: Annotated[str | None, typer.Option(help="Check against this repository.")] = None,
    provider: Annotated[str | None, typer.Option(help="Override the mission's provider.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="API server URL, as for `pd run`.", rich_help_panel=run.ADVANCED),
    ] = None,
    cassette: Annotated[
        str | None,
        typer.Option(help="Cassette, as for `pd run`.", rich_help_panel=run.ADVANCED),
    ] = None,
) -> int:
    """Check a mission without running it: fields, roles, graph, repository, gate."""
    from orchestrator.engine.preflight import build_plan
    from orchestrator.spec.composition import check_composition
    from orchestrator.spec.mission import resolve_mission_path
    from orchestrator.system.sandbox import describe

    path = resolve_mission_path(mission)
    plan = build_plan(
        path,
        workspace(),
        repo_arg=repo,
        provider=provider,
        base_url=base_url,
        cassette=cassette,
        on_gate=say,  # before the later checks: a missing key should not hide it
    )
    tasks = "tasks planned from the goal" if plan.planning else f"{len(plan.graph)} tasks"
    say(
        f"ok: {path}: {tasks}, {len(plan.workers)} workers, "
        f"gate `{plan.gate_command}` on {plan.target_branch} of {plan.repo}, "
        f"{plan.gates_line()}"
    )
    console.print(f"sandbox: {describe(plan.sandbox)}", soft_wrap=True)
    if not plan.planning:
        say("critical path: " + " → ".join(plan.graph.critical_path()))
    for problem in check_composition(plan.mission, plan.roles):
        say(f"warning: {path}: {problem}")
    return 0


@app.command(hidden=True)
def version() -> None:
    console.print(f"pd {__version__}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a ``PdError`` becomes one line on stderr and its exit code."""
    try:
        result = app(args=argv, prog_name="pd", standalone_mode=False)
    except PdError as exc:
        fail_line(str(exc))
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        fail_line("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors come from typer's click core (vendored in newer typer, so not
        # importable by a stable name): they know how to show themselves.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main(sys.argv[1:] if Path(sys.argv[0]).name != "pd" else None)
