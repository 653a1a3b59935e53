"""``pd status``: a live run's workers and tasks, read from its snapshot."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from orchestrator.cli.output import RUN, console, print_json
from orchestrator.record.control import coordinator_alive
from orchestrator.record.report import merge_rejections, rejection_line
from orchestrator.record.store import RunStore


def status(
    run: RUN = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    watch: Annotated[bool, typer.Option(help="Refresh every second until the run ends.")] = False,
) -> int:
    """Show a run's state: workers, tasks, merge queue."""
    store = RunStore.open(run)
    if as_json:
        print_json(current(store))
        return 0
    if not watch:
        console.print(render(current(store)))
        return 0
    with Live(render(current(store)), console=console, refresh_per_second=2) as live:
        while True:
            state = current(store)
            live.update(render(state))
            if state.get("status") != "running":
                return 0
            time.sleep(1)


def current(store: RunStore) -> dict[str, Any]:
    """The snapshot, with ``status`` corrected when the coordinator died without a word."""
    state = store.read_state() or {
        "run_id": store.run_id,
        "status": "starting",
        "tasks": [],
        "workers": [],
    }
    state["coordinator_alive"] = coordinator_alive(store)
    state["merge_rejections"] = merge_rejections(store)
    if state.get("status") == "running" and not state["coordinator_alive"]:
        state["status"] = "crashed"
        state["hint"] = f"the coordinator is gone; continue with `pd resume {store.run_id}`"
    return state


def render(state: dict[str, Any]) -> Group:
    head = (state.get("head") or "")[:10]
    title = (
        f"run {state['run_id']} — {state.get('mission', '?')}: {state['status']}"
        f" — {state.get('target_branch', '?')} at {head}"
    )
    workers = Table(title=title, title_justify="left")
    for column in ("worker", "role", "state", "task", "pid", "crashes"):
        workers.add_column(column)
    for w in state.get("workers", []):
        task = f"{w['task']} #{w['attempt']}" if w.get("task") else ""
        if task and w.get("job") == "review":
            task = f"review {task}"
        workers.add_row(
            w["id"], w["role"], w["state"], task, str(w.get("pid") or ""), str(w.get("crashes", 0))
        )
    tasks = Table()
    reviewed = any(t.get("review") for t in state.get("tasks", []))
    for column in ("task", "state", "attempts", "worker", "critical path"):
        tasks.add_column(column)
    if reviewed:
        tasks.add_column("review")
    for t in state.get("tasks", []):
        row = [
            t["id"],
            t["state"],
            str(t.get("attempts", 0)),
            t.get("worker") or "",
            str(t.get("critical_path", "")),
        ]
        tasks.add_row(*row, *([review_cell(t)] if reviewed else []))
    merger = state.get("merger") or {}
    lines = [workers, tasks]
    if state.get("sandbox"):
        lines.append(f"sandbox: {state['sandbox']}")
    if state.get("planning"):
        lines.append(planning_line(state["planning"]))
    rejected = state.get("merge_rejections") or {}
    if any(rejected.values()):
        flaky = rejected.get("flaky", 0)
        lines.append("merges: " + rejection_line(rejected["gate"], rejected["conflicts"], flaky))
    if merger.get("task") or merger.get("queue"):
        merging = merger.get("task") or "-"
        if merger.get("gates", 0) > 1:  # parallel gates: every batch at the merger
            merging = f"{', '.join(merger['batch'])} ({merger['gates']} gates)"
        lines.append(f"merging: {merging}; queued: {', '.join(merger.get('queue', [])) or '-'}")
    spend = (state.get("permits") or {}).get("spend")
    if spend:
        budget = f" of ${spend['budget']}" if spend.get("budget") else ""
        lines.append(
            f"spent ${spend['spent']}{budget} (reserved ${spend['reserved']}) on "
            f"{spend['run']['calls']} calls; {state['permits']['in_flight']} in "
            f"flight, {state['permits']['waiting']} waiting for a permit"
        )
    if (state.get("permits") or {}).get("exhausted"):
        lines.append(state["permits"]["exhausted"])
    if state.get("hint"):
        lines.append(state["hint"])
    return Group(*lines)


def planning_line(step: dict[str, Any]) -> str:
    """The planning step of a goal mission, in one line."""
    tries = f"{step['attempts']} of {step['max_attempts']} attempts"
    if step["state"] == "accepted":
        return f"planned by the {step['role']}: {step['tasks']} tasks ({tries})"
    if step["state"] == "running":
        return f"planning: {step['worker']} is planning the goal ({tries})"
    last = (step.get("last_failure") or "").strip().splitlines()
    why = f"; last failure: {last[0][:120]}" if last else ""
    if step["state"] == "failed":
        return f"planning failed after {step['attempts']} attempts{why}"
    return f"planning: waiting for an idle {step['role']} worker ({tries} used){why}"


def review_cell(task: dict[str, Any]) -> str:
    """A task's review so far: rounds, the last verdict, who reviews it now."""
    if not task.get("review"):
        return "off"
    verdict = {"approve": "approved", "request_changes": "changes requested"}
    parts = [f"{task.get('reviews', 0)} rounds"]
    if task.get("verdict"):
        parts.append(f"last: {verdict.get(task['verdict'], task['verdict'])}")
    if task.get("reviewer") and task.get("state") == "reviewing":
        parts.append(f"by {task['reviewer']} now")
    return ", ".join(parts)
