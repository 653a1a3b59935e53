"""Rebuild a run's task graph from its event log, so ``pd resume`` goes on where it was.

Merged work is never redone: a task counts as merged if its merge was recorded, or if
its submitted commit is already in the target branch (the coordinator died between the
merger moving the branch and the event being written).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.gitutil import is_ancestor
from orchestrator.taskgraph import TaskGraph, TaskState


def rebuild(graph: TaskGraph, events: Iterable[dict[str, Any]], repo: Path, head: str) -> int:
    """Restore every task's state from ``events``; returns how many tasks were merged."""
    record: dict[str, dict[str, Any]] = {
        t.id: {
            "state": TaskState.PENDING,
            "attempts": 0,
            "feedback": [],
            "handoff": "",
            "start_from": "",
            "handed_off": 0,
            "commit": None,
            "submitted": None,
        }
        for t in graph
    }
    for event in events:
        entry = record.get(event.get("task") or "")
        kind = event["kind"]
        if entry is None:
            continue
        if kind == "task_submitted":
            entry["submitted"] = event["commit"]
        elif kind == "task_merged":
            entry.update(state=TaskState.MERGED, commit=event["head"])
        elif kind == "attempt_failed":
            entry["attempts"] = event["attempt"]
            entry["feedback"].append(event["reason"])
            entry.update(submitted=None, handoff=event.get("handoff", ""), start_from="")
            if event["state"] == TaskState.FAILED:
                entry["state"] = TaskState.FAILED
        elif kind == "attempt_handed_off":
            entry["attempts"] = event["attempt"]
            entry["handed_off"] += 1
            entry.update(handoff=event["handoff"], start_from=event["commit"])
        elif kind == "task_aborted":
            entry["state"] = TaskState.ABORTED
    for task_id, entry in record.items():
        if (
            entry["state"] is TaskState.PENDING
            and entry["submitted"]
            and is_ancestor(repo, entry["submitted"], head)
        ):
            entry.update(state=TaskState.MERGED, commit=entry["submitted"])
        graph.restore(
            task_id,
            entry["state"],
            entry["attempts"],
            commit=entry["commit"],
            feedback=entry["feedback"],
            handoff=entry["handoff"],
            start_from=entry["start_from"],
            handed_off=entry["handed_off"],
        )
    graph.settle()
    return sum(1 for e in record.values() if e["state"] is TaskState.MERGED)
