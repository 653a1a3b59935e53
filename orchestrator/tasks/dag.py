"""A mission's tasks checked as a DAG: ids, dependencies, cycles, and the critical path.

Everything here runs once, when a graph is built; a problem is a ``GraphError`` naming
the task's field and the fix, which the mission loader and the planner turn into one
line for their own file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import PdError
from orchestrator.tasks.node import TaskNode


class GraphError(PdError):
    """The tasks do not form a valid graph. Carries where, what and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem} (fix: {fix})")


@dataclass
class Dag:
    nodes: dict[str, TaskNode]  # in mission order
    children: dict[str, list[str]]  # task -> its dependents, in mission order
    order: list[str]  # dependencies before dependents
    critical: list[str]  # the longest chain, root first


def build_dag(
    tasks: Iterable[Mapping[str, Any] | object],
    default_max_attempts: int,
    review: bool,
    max_review_rounds: int,
) -> Dag:
    """Nodes for ``tasks`` (dicts or mission models alike), checked; each knows the
    length of its longest chain to a sink."""
    nodes: dict[str, TaskNode] = {}
    for index, item in enumerate(tasks):
        node = _node(nodes, index, item, default_max_attempts)
        node.review = bool(_read(item, "review", review))
        node.max_review_rounds = max_review_rounds
        nodes[node.id] = node
    children: dict[str, list[str]] = {tid: [] for tid in nodes}
    for node in nodes.values():
        for dep in node.deps:
            _check_dep(nodes, node, dep)
            children[dep].append(node.id)  # children stay in mission order
    order = _topological_order(nodes)
    for tid in reversed(order):
        below = [nodes[c].critical_path for c in children[tid]]
        nodes[tid].critical_path = 1 + max(below, default=0)
    return Dag(nodes, children, order, _longest_chain(nodes, children))


def _read(item: Mapping[str, Any] | object, name: str, default: Any = None) -> Any:
    """Read a mission field from a dict or a model object alike; None means the default."""
    value = item.get(name, default) if isinstance(item, Mapping) else getattr(item, name, default)
    return default if value is None else value


def _node(
    nodes: dict[str, TaskNode], index: int, item: Mapping[str, Any] | object, attempts: int
) -> TaskNode:
    tid, where = _read(item, "id"), f"tasks[{index}]"
    if not isinstance(tid, str) or not tid:
        raise GraphError(f"{where}.id", "missing or empty id", "give the task an id")
    if tid in nodes:
        first = nodes[tid].index
        problem = f"duplicate id {tid!r}, already used by tasks[{first}]"
        raise GraphError(f"{where}.id", problem, "give every task its own id")
    max_attempts = _read(item, "max_attempts", attempts)
    if max_attempts < 1:
        raise GraphError(f"{where}.max_attempts", "must be at least 1", "set 1 or more")
    return TaskNode(
        id=tid,
        title=_read(item, "title", tid),
        description=_read(item, "description", ""),
        role=_read(item, "role"),
        capabilities=list(_read(item, "capabilities", [])),
        deps=list(dict.fromkeys(_read(item, "deps", []))),
        files=list(_read(item, "files", [])),
        priority=_read(item, "priority", 0),
        critical=bool(_read(item, "critical", False)),
        max_attempts=max_attempts,
        index=index,
    )


def _check_dep(nodes: dict[str, TaskNode], node: TaskNode, dep: str) -> None:
    if dep in nodes:
        return
    ids = list(nodes)
    known = ", ".join(ids[:10]) + (f", ... ({len(ids) - 10} more)" if len(ids) > 10 else "")
    close = difflib.get_close_matches(dep, ids, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    fix = f"{hint}use one of the known ids: {known}"
    raise GraphError(f"tasks[{node.index}].deps", f"unknown dependency {dep!r}", fix)


def _topological_order(nodes: dict[str, TaskNode]) -> list[str]:
    """Dependencies before dependents, or a GraphError naming the first cycle found.
    Iterative depth-first search, so a long chain cannot hit the recursion limit."""
    order: dict[str, None] = {}  # an ordered set: finished tasks, dependencies first
    for root in nodes:
        if root in order:
            continue
        path, pending = [root], [iter(nodes[root].deps)]
        while path:
            dep = next(pending[-1], None)
            if dep is None:
                order[path.pop()] = None
                pending.pop()
            elif dep in path:
                raise _cycle_error(nodes, [*path[path.index(dep) :], dep])
            elif dep not in order:
                path.append(dep)
                pending.append(iter(nodes[dep].deps))
    return list(order)


def _cycle_error(nodes: dict[str, TaskNode], cycle: list[str]) -> GraphError:
    last, first = cycle[-2], cycle[-1]
    problem = f"cycle {' -> '.join(cycle)} (each task depends on the next)"
    fix = f"remove {first!r} from the deps of {last!r}, or break another edge of the cycle"
    return GraphError(f"tasks[{nodes[last].index}].deps", problem, fix)


def _longest_chain(nodes: dict[str, TaskNode], children: dict[str, list[str]]) -> list[str]:
    """Ids of the longest dependency chain, root first; ties go to the earlier task."""
    chain: list[str] = []
    candidates = list(nodes.values())
    while candidates:
        node = min(candidates, key=lambda n: (-n.critical_path, n.index))
        chain.append(node.id)
        candidates = [nodes[c] for c in children[node.id]]
    return chain
