"""One task of a run and the states of its life.

``TaskNode`` tells its graph's index when its state changes and caches its JSON until it
changes, so the loop's cost per step follows what changed, not the graph's size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.wire.fastjson import dumps_text


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    REVIEWING = "reviewing"  # submitted; a reviewer role judges it before the merge queue
    MERGING = "merging"
    MERGED = "merged"
    # The attempt changed nothing because its change was already in the target (another
    # task or commit made it): done, but nothing of this task's was merged.
    ALREADY_MERGED = "already-merged"
    FAILED = "failed"
    BLOCKED = "blocked"
    ABORTED = "aborted"


# States a task can still leave; the run is done when no task is in one.
ACTIVE = frozenset({TaskState.PENDING, TaskState.RUNNING, TaskState.REVIEWING, TaskState.MERGING})
# States whose work is in the target: dependents may start.
LANDED = frozenset({TaskState.MERGED, TaskState.ALREADY_MERGED})
# States that never lead to MERGED, so tasks below them can never be ready.
DEAD_ENDS = frozenset({TaskState.FAILED, TaskState.ABORTED, TaskState.BLOCKED})


@dataclass
class TaskNode:
    """One task: what the mission asked for, plus where it is in its life."""

    id: str
    title: str
    description: str = ""
    role: str | None = None
    capabilities: list[str] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    priority: int = 0
    critical: bool = False  # its attempts use the top model tier
    max_attempts: int = 3
    index: int = 0  # position in the mission: the "age" tie-breaker, earlier goes first
    state: TaskState = TaskState.PENDING
    attempts: int = 0  # attempts started, the running one included
    # One reason per failed attempt, shown to the next attempt so it does not repeat it.
    feedback: list[str] = field(default_factory=list)
    handoff: str = ""
    handoffs: int = 0  # attempts handed off on request (``pd handoff``): not failures
    infra_failures: int = 0  # attempts pd's own machinery broke (git, disk): not failures
    worker: str | None = None  # current or last successful worker; cleared on requeue
    branch: str | None = None
    commit: str | None = None  # submitted commit, then the merged head
    summary: str = ""
    critical_path: int = 1  # tasks in the longest chain from here to a sink, itself included
    # Review (see review.py): each submitted version goes to a reviewer first while fewer
    # than ``max_review_rounds`` reviews have asked for changes.
    review: bool = False
    max_review_rounds: int = 2
    reviews: int = 0  # verdicts given, so the next review is round reviews + 1
    review_rounds: int = 0  # verdicts that asked for changes; not failed attempts
    review_failures: int = 0  # review jobs of the current version that ended without one
    verdict: str = ""  # the last one: "approve" or "request_changes"
    reviewer: str | None = None  # the worker reviewing it now
    # Earlier work the next attempt builds on: the reviewed commit, or the work in
    # progress a handoff committed.
    start_from: str | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        """Every change drops the cached JSON of the node; a state change also tells the
        graph's index. (Lists changed in place, like ``feedback``, change along with some
        field set in the same graph method, so the cache is dropped then too.)"""
        fields = self.__dict__
        old = fields.get(name) if name == "state" else None
        fields[name] = value
        fields["_json"] = None
        if name == "state" and (graph := fields.get("_graph")) is not None:
            graph._index.moved(self, old, value)

    def to_json(self) -> str:
        """The node's fields as compact JSON, cached until the node changes (the
        snapshot's cost then grows with what changed, not with the graph). Written
        straight from the fields: orjson leaves out the ``_`` attributes (the cache and
        the graph)."""
        text = self.__dict__.get("_json")
        if text is None:
            text = self.__dict__["_json"] = dumps_text(self)
        return text
