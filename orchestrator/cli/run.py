"""``pd run``, ``pd resume`` and ``pd demo``: the commands that start a coordinator."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.output import RUN, console
from orchestrator.errors import BadInput
from orchestrator.record.control import coordinator_alive, kill_recorded
from orchestrator.record.store import RunStore, new_run_id, workspace

if TYPE_CHECKING:
    from orchestrator.engine.preflight import RunPlan

ADVANCED = "Advanced"


def run(
    mission: Annotated[str, typer.Argument(help="Mission file, or a shipped mission's name.")],
    repo: Annotated[
        str | None,
        typer.Option(help="Target repository (default: the mission's repo, else this folder)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Use at most N workers.")] = None,
    provider: Annotated[str | None, typer.Option(help="Override the mission's provider.")] = None,
    budget: Annotated[
        str | None, typer.Option(help="Most the run may spend, in USD (e.g. 5 or 2.50).")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="API server URL: an OpenAI-compatible one (Ollama, vLLM, llama.cpp) or a proxy.",
            rich_help_panel=ADVANCED,
        ),
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            help="Write every model exchange into a cassette for offline replay.",
            rich_help_panel=ADVANCED,
        ),
    ] = False,
    cassette: Annotated[
        str | None,
        typer.Option(
            help="Replay this cassette (with --provider scripted).", rich_help_panel=ADVANCED
        ),
    ] = None,
    worktrees: Annotated[
        str | None,
        typer.Option(
            help="Folder for worker worktrees (default: ./worktrees).", rich_help_panel=ADVANCED
        ),
    ] = None,
    detach: Annotated[bool, typer.Option(help="Run in the background; print the run id.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every tool call.")] = False,
    quiet: Annotated[
        bool, typer.Option(help="No live progress.", rich_help_panel=ADVANCED)
    ] = False,
    run_id: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> int:
    """Run a mission on a repository until every task is merged, failed or aborted."""
    from orchestrator.engine.preflight import build_plan
    from orchestrator.spec.mission import resolve_mission_path

    home = workspace()
    path = resolve_mission_path(mission)
    options = {
        "repo": repo,
        "workers": workers,
        "provider": provider,
        "budget": budget,
        "base-url": base_url,
        "cassette": cassette,
        "worktrees": worktrees,
    }
    plan = build_plan(
        path,
        home,
        repo_arg=repo,
        workers=workers,
        provider=provider,
        worktrees=worktrees,
        base_url=base_url,
        budget=_dollars(budget),
        cassette=cassette,
    )
    plan.record = record
    if detach:
        return _detach(mission, options, record)
    return execute(plan, RunStore.create(home, run_id), verbose=verbose, quiet=quiet)


def execute(plan: RunPlan, store: RunStore, verbose: bool = False, quiet: bool = False) -> int:
    """Run a checked plan in this process and print the outcome."""
    from rich.markup import escape

    from orchestrator.cli.progress import ProgressPrinter
    from orchestrator.cli.report import print_report
    from orchestrator.record.report import build_report
    from orchestrator.spec.testcommand import Detected

    store.write_json("mission.json", plan.mission.model_dump(mode="json"))
    store.write_json(
        "plan.json",
        {
            "mission_path": str(plan.mission_path),
            "workspace": str(plan.workspace),
            "repo": str(plan.repo),
            "workers": len(plan.workers),
            "worktrees": str(plan.worktree_root / store.run_id),
            "worktree_root": str(plan.worktree_root),
            "budget": None if plan.mission.budget is None else str(plan.mission.budget),
            "base_url": plan.provider.base_url,
            "cassette": str(plan.provider.cassette) if plan.provider.cassette else None,
            "record": plan.record,
            "provider": plan.mission.provider.name,
            "gate": plan.gate_command,  # a resumed run gates with it, whatever the repo shows
        },
    )
    if not quiet:
        tasks = "tasks planned by the producer" if plan.planning else f"{len(plan.graph)} tasks"
        console.print(
            f"run [bold]{store.run_id}[/]: {plan.mission.name}, "
            f"{tasks}, {len(plan.workers)} workers, "
            f"repo {plan.repo} ({plan.target_branch}); "
            + escape(Detected(plan.gate_command, plan.gate_detected).line())
            + f"; {plan.gates_line()}",
            soft_wrap=True,
        )
    from orchestrator.engine.coordinator import Coordinator  # only the commands that run one

    code = Coordinator(plan, store, on_event=ProgressPrinter(verbose, quiet)).run()
    if not quiet:
        print_report(build_report(store))
    return code


def _detach(mission: str, options: dict[str, object], record: bool) -> int:
    """Start the same command in its own session, so closing the terminal doesn't stop it."""
    run_id = new_run_id()
    args = [sys.executable, "-m", "orchestrator", "run", mission, "--quiet", "--run-id", run_id]
    for flag, value in options.items():
        if value is not None:
            args += [f"--{flag}", str(value)]
    if record:
        args.append("--record")
    log = RunStore.create(workspace(), run_id).dir / "logs" / "console.log"
    with open(log, "ab") as out:
        subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd=Path.cwd(),
        )
    console.print(
        f"started run [bold]{run_id}[/] in the background; follow it with "
        f"`pd status --watch` or `pd logs --follow`; stop it with `pd abort`"
    )
    return 0


def _dollars(text: str | None) -> Decimal | None:
    """``--budget`` as dollars: a finite amount, zero or more (NaN and inf are not)."""
    if text is None:
        return None
    try:
        amount = Decimal(text.lstrip("$"))
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0:
        raise BadInput(
            "--budget", f"'{text}' is not an amount of dollars", "give a number such as 5 or 2.50"
        )
    return amount


def resume(
    run_id: RUN = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> int:
    """Go on with a run whose coordinator stopped: merged work is kept, the rest reruns."""
    from orchestrator.cli.progress import ProgressPrinter
    from orchestrator.cli.report import print_report
    from orchestrator.engine.preflight import build_plan
    from orchestrator.engine.resume import rebuild, restore_plan, unrecorded_merges
    from orchestrator.record.report import build_report

    store = RunStore.open(run_id)
    if coordinator_alive(store):
        raise BadInput(store.run_id, "the run is still running", "follow it with `pd status`")
    info = store.read_json("plan.json")
    kill_recorded({k: v for k, v in (store.read_state() or {}).items() if k != "coordinator"})
    plan = build_plan(
        Path(info["mission_path"]),
        Path(info["workspace"]),
        repo_arg=info["repo"],
        workers=info["workers"],
        worktrees=info.get("worktree_root"),
        provider=info.get("provider"),
        base_url=info.get("base_url"),
        budget=_dollars(info.get("budget")),
        cassette=info.get("cassette"),
        gate_command=info.get("gate"),
    )
    plan.record = bool(info.get("record"))
    events = list(store.events())  # read once: the plan, the graph and the merges need it
    restore_plan(plan, events)  # a recorded plan is the graph: never plan twice
    if plan.planning is not None and plan.planning.state == "failed":
        console.print(f"run {store.run_id} has nothing to resume: its planning failed")
        return 1
    merged = rebuild(plan.graph, events, plan.repo, plan.start_head)
    for event in unrecorded_merges(plan.graph, events, plan.start_head):
        store.append(event)  # landed while the coordinator was dying: recorded first
    if plan.planning is not None and plan.planning.open:
        console.print(f"resuming run {store.run_id}: planning the goal again")
    elif plan.graph.done():
        console.print(f"run {store.run_id} has nothing left to do ({merged} tasks merged)")
        return 0
    else:
        console.print(f"resuming run {store.run_id}: {merged} of {len(plan.graph)} tasks merged")
    from orchestrator.engine.coordinator import Coordinator

    code = Coordinator(plan, store, on_event=ProgressPrinter(verbose)).run()
    print_report(build_report(store))
    return code


def demo(
    directory: Annotated[
        str | None,
        typer.Option("--dir", help="Folder for the sample repository (default: ./pd-demo)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> int:
    """Offline demo: a sample repo, 6 tasks, a team of 8, a rejection and a retry."""
    from orchestrator.engine.preflight import build_plan
    from orchestrator.team.catalog import shipped_dir
    from orchestrator.testing.demo_repo import create_sample_repo, fresh_dir

    target = fresh_dir(Path(directory or "pd-demo").resolve(), explicit=directory is not None)
    create_sample_repo(target)
    # The sample's gate runs `python -m pytest`: use this interpreter, which has pytest.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    plan = build_plan(shipped_dir("missions") / "demo.json", target, repo_arg=str(target))
    code = execute(plan, RunStore.create(target), verbose=verbose)
    console.print(
        f"\nThe sample repository is in {target}. Look around with:\n"
        f"  cd {target} && git log --oneline --graph && pd report"
    )
    return code
