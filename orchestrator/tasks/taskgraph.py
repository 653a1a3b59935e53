"""The mission's tasks as a dependency graph, and the rules that move a task through its life.

Pure logic, no I/O: the coordinator reports each event (started, submitted, merged, failed)
and asks ``ready()`` what to hand out next. Kept apart from processes and git so a stateful
property test can check that a task never starts before its dependencies are merged.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from orchestrator.spec.composition import tier_for
from orchestrator.tasks.dag import GraphError, build_dag
from orchestrator.tasks.index import GraphIndex, Need
from orchestrator.tasks.node import ACTIVE, DEAD_ENDS, LANDED, TaskNode, TaskState
from orchestrator.team.roles import TOP_TIER

# The graph's module is where callers find its vocabulary.
__all__ = ["ACTIVE", "DEAD_ENDS", "LANDED", "GraphError", "TaskGraph", "TaskNode", "TaskState"]


class TaskGraph:
    """Every task of a run, validated as a DAG, with the legal state transitions."""

    def __init__(
        self,
        tasks: Iterable[Mapping[str, Any] | object],
        default_max_attempts: int = 3,
        review: bool = False,
        max_review_rounds: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` stamps when a task becomes ready (``take_ready_at``)."""
        dag = build_dag(tasks, default_max_attempts, review, max_review_rounds)
        self._nodes, self._children, self._order = dag.nodes, dag.children, dag.order
        self._critical = dag.critical
        self._index = GraphIndex(self._nodes, self._children, TaskState.PENDING, LANDED, clock)
        for node in self:
            node.__dict__["_graph"] = self

    @classmethod
    def for_mission(cls, mission: Any, tasks: Iterable[Mapping[str, Any] | object]) -> TaskGraph:
        """``tasks`` (the mission's own, or a plan's) with the mission's defaults."""
        return cls(
            tasks,
            default_max_attempts=mission.max_attempts,
            review=mission.review,
            max_review_rounds=mission.max_review_rounds,
        )

    def get(self, task_id: str) -> TaskNode:
        if task_id not in self._nodes:
            raise KeyError(f"no task {task_id!r} in this graph")
        return self._nodes[task_id]

    def __iter__(self) -> Iterator[TaskNode]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._nodes

    def waits(self, node: TaskNode) -> bool:
        """Whether some dependency of ``node`` has not landed yet."""
        return any(self._nodes[d].state not in LANDED for d in node.deps)

    def _waiting_on(self, node: TaskNode) -> list[str]:
        if not self._index.waiting_on(node.id):
            return []
        return [d for d in node.deps if self._nodes[d].state not in LANDED]

    def ready(self) -> list[TaskNode]:
        """Pending tasks whose dependencies are all merged (so they start from code holding
        them): longest remaining chain first, then the task's priority, then age."""
        return self._index.ready()  # type: ignore[return-value]

    def is_ready(self, task_id: str) -> bool:
        """Whether the task is among ``ready()``, without building the list."""
        return self._index.is_ready(task_id)

    def ready_needs(self) -> Mapping[Need, int]:
        """How many ready tasks want each (role, capabilities): for ``scheduling.match``."""
        return self._index.needs

    def take_ready_at(self, task_id: str) -> float | None:
        """When the task last became ready, by the graph's clock (stamped the moment its
        last dependency landed, not when a worker was next free); given out once."""
        return self._index.take_ready_at(task_id)

    def count(self, state: TaskState) -> int:
        return self._index.count(state)

    def in_state(self, *states: TaskState) -> list[TaskNode]:
        """The tasks in ``states``, in mission order, without a scan of the graph."""
        found = list(self._index.in_state(*states))
        found.sort(key=lambda n: n.index)
        return found  # type: ignore[return-value]

    def any_in(self, *states: TaskState) -> Iterator[TaskNode]:
        """The tasks in ``states`` in no set order: for ``any()`` and sums that change
        no task while they iterate."""
        return self._index.in_state(*states)  # type: ignore[return-value]

    def dependents(self, task_id: str) -> set[str]:
        """Every task that waits on ``task_id``, directly or through others: a walk down
        the edges, so its cost follows the dependents, not the graph."""
        below: set[str] = set()
        stack = [self.get(task_id).id]
        while stack:
            for child in self._children[stack.pop()]:
                if child not in below:
                    below.add(child)
                    stack.append(child)
        return below

    def done(self) -> bool:
        """True when no task can move any more: each is merged, failed, blocked or aborted."""
        return not any(self._index.count(state) for state in ACTIVE)

    def critical_path(self) -> list[str]:
        """Ids of the longest dependency chain, root first; ties go to the earlier task."""
        return list(self._critical)

    def counts(self) -> dict[str, int]:
        return {str(state): self._index.count(state) for state in TaskState}

    def snapshot(self) -> list[dict[str, Any]]:
        """Every node as a JSON-ready dict, for status output and the run store."""
        return [{**dataclasses.asdict(n), "state": str(n.state)} for n in self]

    def snapshot_json(self) -> str:
        """``snapshot()`` as JSON text, from each node's cached JSON: only the nodes that
        changed since the last call are encoded again."""
        return "[" + ",".join([n.to_json() for n in self._nodes.values()]) + "]"

    def _expect(self, task_id: str, action: str, *states: TaskState) -> TaskNode:
        node = self.get(task_id)
        if node.state not in states:
            wanted = " or ".join(states)
            raise ValueError(f"cannot {action} task {task_id!r}: it is {node.state}, not {wanted}")
        return node

    def start(self, task_id: str, worker: str, attempt: int | None = None) -> int:
        """Hand a ready task to ``worker``; returns the attempt number (1 for the first,
        or ``attempt`` as a replayed log recorded it)."""
        node = self._expect(task_id, "start", TaskState.PENDING)
        if waiting := self._waiting_on(node):
            raise ValueError(f"cannot start task {task_id!r}: dependencies not merged: {waiting}")
        node.state, node.worker = TaskState.RUNNING, worker
        node.attempts = attempt if attempt is not None else node.attempts + 1
        return node.attempts

    def submitted(
        self, task_id: str, branch: str, commit: str, summary: str, state: TaskState | None = None
    ) -> TaskState:
        """The worker finished; its branch now waits for a reviewer (review on, rounds
        left) or for the merger. Returns which (``state``: as a replayed log decided)."""
        node = self._expect(task_id, "submit", TaskState.RUNNING)
        reviewed = node.review and node.review_rounds < node.max_review_rounds
        node.state = state or (TaskState.REVIEWING if reviewed else TaskState.MERGING)
        node.branch, node.commit, node.summary = branch, commit, summary
        node.review_failures = 0
        return node.state

    def needs_reviewer(self) -> list[TaskNode]:
        """Tasks in review that no reviewer holds, longest chain first, then age."""
        reviewing = self.any_in(TaskState.REVIEWING)
        waiting = [n for n in reviewing if n.reviewer is None]
        return sorted(waiting, key=lambda n: (-n.critical_path, -n.priority, n.index))

    def start_review(self, task_id: str, reviewer: str) -> int:
        """Hand the submitted version to ``reviewer`` (never its implementer); returns the
        round (1 for the first review)."""
        node = self._expect(task_id, "review", TaskState.REVIEWING)
        if node.reviewer is not None or reviewer == node.worker:
            why = "it has a reviewer" if node.reviewer else "its implementer cannot review it"
            raise ValueError(f"cannot hand task {task_id!r} to {reviewer}: {why}")
        node.reviewer = reviewer
        return node.reviews + 1

    def reviewed(self, task_id: str, approved: bool, feedback: str = "") -> TaskState:
        """A verdict. Approved: on to the merger. Changes requested: back to the queue with
        ``feedback``, the next attempt building on the reviewed commit; not a failed
        attempt. Once ``max_review_rounds`` verdicts asked for changes, the next version
        skips review (``submitted`` sends it to the merger; the gate still decides)."""
        node = self._expect(task_id, "record a review of", TaskState.REVIEWING)
        node.reviewer, node.review_failures = None, 0
        node.reviews += 1
        node.verdict = "approve" if approved else "request_changes"
        if approved:
            node.state = TaskState.MERGING
            return node.state
        node.review_rounds += 1
        node.feedback.append(feedback)
        node.state, node.worker, node.start_from = TaskState.PENDING, None, node.commit
        return node.state

    def review_failed(
        self, task_id: str, reason: str, max_failures: int, state: TaskState | None = None
    ) -> TaskState:
        """A review job ended without a verdict (crash, turn limit, error). The version
        waits for another reviewer until ``max_failures`` jobs failed; then the task fails
        (it never merges unreviewed because reviewers broke) and dependents are blocked."""
        node = self._expect(task_id, "fail a review of", TaskState.REVIEWING)
        node.reviewer = None
        node.review_failures += 1
        failed = (
            node.review_failures >= max_failures if state is None else state is TaskState.FAILED
        )
        if failed:
            node.feedback.append(reason)
            node.state = TaskState.FAILED
            self.settle()
        return node.state

    def merged(self, task_id: str, commit: str) -> None:
        """The merger moved the target to ``commit``; dependents may now become ready. A
        task aborted while the merger had it landed all the same: it is merged, and the
        dependents its abort blocked are unblocked. (From review: on resume, a version
        found in the target already, see ``resume.rebuild``.)"""
        node = self._expect(
            task_id, "merge", TaskState.MERGING, TaskState.REVIEWING, TaskState.ABORTED
        )
        aborted = node.state is TaskState.ABORTED
        node.state, node.commit = TaskState.MERGED, commit
        if aborted:
            self.settle()

    def already_merged(self, task_id: str, commit: str) -> None:
        """The attempt's change was already in the target at ``commit``: nothing to merge,
        and dependents may start as if it had merged."""
        node = self._expect(task_id, "mark already merged", TaskState.RUNNING, TaskState.MERGING)
        node.state, node.commit = TaskState.ALREADY_MERGED, commit

    def attempt_failed(
        self, task_id: str, reason: str, handoff: str = "", state: TaskState | None = None
    ) -> TaskState:
        """An attempt ended without a merge (gate, conflict, agent error or crash alike).

        The task goes back to the queue with ``reason`` as feedback until it has used
        ``max_attempts``; then it fails and its dependents are blocked, as they can never run.
        """
        node = self._expect(task_id, "fail an attempt of", TaskState.RUNNING, TaskState.MERGING)
        if node.state is TaskState.MERGING:  # the version clashes with the target: start over
            node.start_from = None
        node.feedback.append(reason)
        node.handoff, node.worker = handoff, None
        if state is None:
            retry = self.failed_attempts(node) < node.max_attempts
        else:
            retry = state is not TaskState.FAILED
        if retry:
            node.state = TaskState.PENDING
        else:
            node.state = TaskState.FAILED
            self.settle()
        return node.state

    def hand_off(self, task_id: str, handoff: str, start_from: str) -> None:
        """The running attempt was handed off on request: back to the queue with its note
        and its work in progress, and the attempt does not count against max_attempts."""
        node = self._expect(task_id, "hand off", TaskState.RUNNING)
        node.state, node.worker = TaskState.PENDING, None
        node.handoff, node.start_from = handoff, start_from
        node.handoffs += 1

    def infra_failed(
        self, task_id: str, reason: str, max_failures: int, state: TaskState | None = None
    ) -> TaskState:
        """pd's machinery broke the running attempt or its merge (a git or disk failure):
        a running task goes back to the queue as it was, a merging one waits for the
        merge to be tried again; not counted against ``max_attempts`` and no feedback for
        the agent, until ``max_failures`` such breaks; then the task fails with ``reason``."""
        node = self._expect(task_id, "retry", TaskState.RUNNING, TaskState.MERGING)
        node.infra_failures += 1
        if state is None:
            retry = node.infra_failures < max_failures
        else:
            retry = state is not TaskState.FAILED
        if retry:  # a merge is tried again as it is
            if node.state is TaskState.RUNNING:
                node.state, node.worker = TaskState.PENDING, None
        else:
            node.feedback.append(reason)
            node.state = TaskState.FAILED
            self.settle()
        return node.state

    def escalated(self, task_id: str) -> bool:
        """Whether the running attempt goes to the top model tier: the task is critical,
        or it failed twice before (``tier_for``). Review send-backs, handoffs and pd's own
        breakage are not failures, so they never escalate (README, "Models")."""
        node = self._expect(task_id, "escalate", TaskState.RUNNING)
        return tier_for("", node.critical, self.failed_attempts(node)) == TOP_TIER

    @staticmethod
    def failed_attempts(node: TaskNode) -> int:
        """Attempts that count against ``max_attempts``: every attempt started, less those
        a review sent back (each request for changes starts exactly one more), those
        handed off on request and those pd's own machinery broke."""
        return node.attempts - node.review_rounds - node.handoffs - node.infra_failures

    def abort(self, task_id: str) -> list[str]:
        """Stop a task for good; returns the ids that changed: it, then blocked dependents."""
        self._expect(task_id, "abort", *ACTIVE).state = TaskState.ABORTED
        return [task_id, *self.settle()]

    def abort_all(self) -> list[str]:
        """Abort every task that can still move; returns their ids in mission order."""
        changed = self.in_state(*ACTIVE)
        for node in changed:
            node.state = TaskState.ABORTED
        return [n.id for n in changed]

    def settle(self) -> list[str]:
        """Re-derive BLOCKED: a pending or blocked task is blocked exactly when a dependency
        is failed, aborted or blocked. Runs after each failure or abort and after a replay;
        other states are kept, so a user's abort is never rewritten. Returns the ids that
        changed, dependencies first."""
        changed = []
        for node in (self._nodes[t] for t in self._order):  # dependencies settle first
            if node.state not in (TaskState.PENDING, TaskState.BLOCKED):
                continue
            dead = any(self._nodes[d].state in DEAD_ENDS for d in node.deps)
            new = TaskState.BLOCKED if dead else TaskState.PENDING
            if new is not node.state:
                node.state = new
                changed.append(node.id)
        return changed
