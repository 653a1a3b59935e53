"""What the coordinator asks the graph every loop step, kept current as tasks move.

A scan of every task per step made the loop's cost grow with the graph (3,000 waiting
tasks: half a second per step). The index is told of each state change (``moved``) and
updates only what that change touches: the task's state bucket, its dependents' count of
unlanded dependencies, the ready order and, per requirement, how many ready tasks have
it. A stateful property test checks it against a recomputation from scratch.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

# What a worker needs to take a task: its role, else the capabilities it asks for.
Need = tuple[str | None, frozenset[str]]


class Node(Protocol):
    id: str
    state: Any
    deps: list[str]
    role: str | None
    capabilities: list[str]
    critical_path: int
    priority: int
    index: int


def need_of(node: Any) -> Need:
    capabilities = getattr(node, "capabilities", None) or ()
    return (getattr(node, "role", None) or None, frozenset(capabilities))


def order_key(node: Node) -> tuple[int, int, int]:
    """Longest remaining chain first, then the task's priority, then age."""
    return (-node.critical_path, -node.priority, node.index)


class GraphIndex:
    """Tasks by state, the ready tasks in order, and when each became ready."""

    def __init__(
        self,
        nodes: Mapping[str, Node],
        children: Mapping[str, Sequence[str]],
        pending: Any,
        landed: frozenset[Any],
        clock: Callable[[], float],
    ) -> None:
        self._nodes, self._children = nodes, children
        self._pending, self._landed, self._clock = pending, landed, clock
        self._by_state: dict[Any, dict[str, Node]] = {}
        self._waiting: dict[str, int] = {}  # dependencies not landed yet
        self._keys: list[tuple[int, int, int]] = []  # ready, in order
        self._ready: list[Node] = []  # the same tasks, same order
        self._ready_ids: set[str] = set()  # the same tasks, to ask about one
        self.needs: Counter[Need] = Counter()  # ready tasks per requirement
        self._ready_at: dict[str, float] = {}
        for node in nodes.values():
            self._by_state.setdefault(node.state, {})[node.id] = node
        for node in nodes.values():
            self._waiting[node.id] = sum(nodes[d].state not in landed for d in node.deps)
            self._refresh(node)

    # ---- queries -----------------------------------------------------------------

    def ready(self) -> list[Node]:
        return list(self._ready)

    def is_ready(self, task_id: str) -> bool:
        return task_id in self._ready_ids

    def count(self, state: Any) -> int:
        return len(self._by_state.get(state, ()))

    def in_state(self, *states: Any) -> Iterator[Node]:
        """Tasks in ``states``, in no particular order (sort by ``index`` for mission
        order). Read as it goes, not copied first (the loop asks every turn whether a
        pending task fits a worker, with thousands pending): change no task meanwhile."""
        for state in states:
            yield from self._by_state.get(state, {}).values()

    def waiting_on(self, task_id: str) -> int:
        return self._waiting[task_id]

    def take_ready_at(self, task_id: str) -> float | None:
        """When the task last became ready (the clock's time), once; None if not stamped."""
        return self._ready_at.pop(task_id, None)

    def ready_at(self, task_id: str) -> float | None:
        return self._ready_at.get(task_id)

    # ---- updates -----------------------------------------------------------------

    def moved(self, node: Node, old: Any, new: Any) -> None:
        """``node`` went from ``old`` to ``new``: update what that touches, nothing else."""
        if old == new:
            return
        bucket = self._by_state.get(old)
        if bucket is not None:
            bucket.pop(node.id, None)
        self._by_state.setdefault(new, {})[node.id] = node
        if (old in self._landed) != (new in self._landed):
            step = -1 if new in self._landed else 1
            for child in self._children.get(node.id, ()):
                self._waiting[child] += step
                self._refresh(self._nodes[child])
        self._refresh(node)

    def _refresh(self, node: Node) -> None:
        """Put ``node`` in or out of the ready order; stamp it when it comes in."""
        should = node.state == self._pending and self._waiting[node.id] == 0
        if should == (node.id in self._ready_ids):
            return  # in or out already (most moves: running to merging, and so on)
        key = order_key(node)
        at = bisect.bisect_left(self._keys, key)
        present = at < len(self._keys) and self._keys[at] == key
        if should and not present:
            self._keys.insert(at, key)
            self._ready.insert(at, node)
            self._ready_ids.add(node.id)
            self.needs[need_of(node)] += 1
            self._ready_at.setdefault(node.id, self._clock())
        elif present and not should:
            del self._keys[at]
            del self._ready[at]
            self._ready_ids.discard(node.id)
            need = need_of(node)
            self.needs[need] -= 1
            if not self.needs[need]:
                del self.needs[need]
