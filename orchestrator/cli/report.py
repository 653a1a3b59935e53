"""``pd report``: what a run did, task by task."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from orchestrator.cli.output import RUN, console, print_json
from orchestrator.record.report import build_report, rejection_line
from orchestrator.record.store import RunStore

STATE_STYLE = {
    "merged": "green",
    "already-merged": "green",
    "failed": "red",
    "blocked": "red",
    "aborted": "yellow",
}


def report(
    run: RUN = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """Show what a run did: every task's outcome, rejections, crashes, timings."""
    data = build_report(RunStore.open(run))
    if as_json:
        print_json(data)
    else:
        print_report(data)
    return 0


def print_report(data: dict[str, Any]) -> None:
    table = Table(
        title=f"run {data['run_id']} — {data.get('mission') or '?'}: "
        f"{data.get('status') or 'unknown'}",
        title_justify="left",
    )
    reviewed = any(t.get("review") for t in data["tasks"])
    for column in ("task", "state", "attempts", "workers", "rejections / failures"):
        table.add_column(column)
    if reviewed:
        table.add_column("reviews")
    for task in data["tasks"]:
        problems = [
            f"#{r['attempt']}: {_line(r['reason'])}"
            + (f"\n    {_line(r['detail'])}" if r.get("detail") else "")
            for r in task["rejections"]
        ]
        problems += [
            f"#{f['attempt']}: {_line(f['reason'])}"
            for f in task["failures"]
            if not any(r["attempt"] == f["attempt"] for r in task["rejections"])
        ]
        style = STATE_STYLE.get(task["state"], "")
        table.add_row(
            task["id"],
            f"[{style}]{task['state']}[/]" if style else task["state"],
            str(task["attempts"]),
            ",".join(dict.fromkeys(task["workers"])),
            "\n".join(problems),
            *([_reviews(task)] if reviewed else []),
        )
    console.print(table)
    if data.get("planning"):
        print_planning(data["planning"])
    counts = ", ".join(f"{n} {state}" for state, n in sorted(data.get("counts", {}).items()) if n)
    seconds = f" in {data['seconds']}s" if data.get("seconds") is not None else ""
    merges = rejection_line(
        data["rejections"], data.get("conflicts", 0), len(data.get("flaky", []))
    )
    console.print(
        f"{counts}{seconds}; {merges}, "
        f"{len(data['crashes'])} worker crashes, {data['respawns']} respawns"
    )
    print_spend(data)
    print_skills(data)
    if data.get("stop_reason"):
        console.print(f"stopped early: {data['stop_reason']}", soft_wrap=True)
    if data.get("head"):
        console.print(
            f"{data.get('target_branch')} is now at {data['head'][:10]} "
            f"(was {(data.get('start_head') or '')[:10]})"
        )


VERDICTS = {"approve": "approved", "request_changes": "changes requested"}


def _reviews(task: dict[str, Any]) -> str:
    """One line per review: round, verdict, reviewer and the first line of the comments."""
    if not task.get("review"):
        return "off"
    lines = []
    for r in task.get("reviews", []):
        verdict = VERDICTS.get(r["verdict"], r["verdict"])
        head = f"r{r['round']} {verdict} ({r['worker']})" if r["round"] else verdict
        lines.append(head + (f": {_line(r['comments'])}" if r.get("comments") else ""))
    return "\n".join(lines) or "none yet"


def _line(text: str) -> str:
    """The first line of a reason or a log, as text: ``test[param]`` is not rich markup."""
    first = (text or "").strip().splitlines()
    return escape(first[0][:90]) if first else ""


def print_spend(data: dict[str, Any]) -> None:
    """Tokens and dollars, by role and by model, when any model call was metered."""
    spend = data.get("spend") or {}
    total = spend.get("total") or {}
    if not total.get("calls"):
        return
    budget = f" of ${data['budget']} budget" if data.get("budget") else ""
    console.print(
        f"spent ${total['cost']}{budget} on {total['calls']} model calls "
        f"({total['input_tokens']:,} input, {total['output_tokens']:,} output, "
        f"{total['cache_read_tokens']:,} cache-read tokens)"
    )
    if total.get("lost"):
        console.print(
            f"{total['lost']} lost calls (their worker died mid-call), charged at reservation"
        )
    table = Table("by", "name", "calls", "input", "output", "USD")
    for dimension in ("role", "model", "task"):
        for name, row in spend.get(dimension, {}).items():
            table.add_row(
                dimension,
                name,
                str(row["calls"]),
                f"{row['input_tokens']:,}",
                f"{row['output_tokens']:,}",
                row["cost"],
            )
    console.print(table)


def print_skills(data: dict[str, Any]) -> None:
    """Per role and kind of attempt: each skill offered, and how often it was used."""
    rows = data.get("skills") or []
    if not rows:
        return
    table = Table("role", "attempts", "skills used / offered")
    grouped: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        cell = f"{row['skill']} {row['used']}/{row['offered']}"
        grouped.setdefault((row["role"], row["kind"]), []).append(cell)
    for (role, kind), cells in grouped.items():
        table.add_row(role, kind, ", ".join(cells))
    console.print(table)


def print_planning(step: dict[str, Any]) -> None:
    """How the goal became the graph: the planner, its attempts, its failures."""
    who = ",".join(step["workers"]) or "-"
    if step["state"] == "accepted":
        console.print(
            f"planned by {who} in {step['attempts']} attempt(s): {len(step['tasks'])} tasks; "
            f"critical path {' → '.join(step['critical_path'])}",
            soft_wrap=True,
        )
    else:
        console.print(f"planning not accepted after {step['attempts']} attempt(s) by {who}")
    for failure in step["failures"]:
        console.print(f"  planning #{failure['attempt']}: {_line(failure['reason'])}")
