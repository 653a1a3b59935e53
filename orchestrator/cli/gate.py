"""``pd gate``: the run's merge queue without agents, for CI and for people's branches.

``pd gate BRANCH... --into main`` merges every branch whose merge passes the tests and
rejects the rest with the failing output; ``pd gate check BRANCH --into main`` only says
whether that branch would pass. Exit 0: all merged (or passed); 1: some were rejected or
conflict; 2: bad input, and nothing moved.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import JSON, console, print_json, say
from orchestrator.errors import BadInput


def gate(
    branches: Annotated[
        list[str],
        typer.Argument(
            metavar="BRANCH...",
            help="Branches or globs ('agent/*'); `check BRANCH` only tests one, moving nothing.",
        ),
    ],
    into: Annotated[str, typer.Option("--into", help="The target branch.")] = "main",
    test: Annotated[
        str | None, typer.Option("--test", help="Test command (default: detected).")
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option("--remote", help="Gate the remote's branches; land by fast-forward push."),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option("--parallel", min=1, help="Gates at once (default: half the cores, up to 4)."),
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Reruns before a branch is rejected (flakes).")
    ] = 1,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds one test run may take.")
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write a JUnit XML report here.")
    ] = None,
    json_out: JSON = False,
    repo: Annotated[Path, typer.Option("--repo", help="The repository.")] = Path("."),
) -> int:
    """Merge the branches that pass the tests into the target; reject the rest."""
    from orchestrator.gate import driver, report, session
    from orchestrator.gate.runner import default_parallel

    checking = branches[:1] == ["check"]
    names = branches[1:] if checking else branches
    if checking and len(names) != 1:
        raise BadInput("pd gate check", f"got {len(names)} branches", "name exactly one")
    setup = session.GateSetup.open(repo, into, test, remote, timeout)
    began = time.monotonic()
    try:
        flaky: list[str] = []
        if checking:
            verdicts = session.check(setup, names[0])
        else:
            gates = parallel or default_parallel()
            verdicts, flaky = driver.run_queue(setup, names, gates, retries)
    finally:
        setup.close()
    seconds = time.monotonic() - began
    if junit is not None:
        report.write_junit(junit, verdicts, seconds)
    if json_out:
        print_json(report.as_json(setup, verdicts, seconds, flaky))
    else:
        for line in report.lines(setup, verdicts, flaky):
            say(line)
        if tails := report.failures(verdicts):
            console.print(tails, markup=False, soft_wrap=True)
    return 0 if all(v.ok for v in verdicts) else 1
