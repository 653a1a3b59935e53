"""Which ready task goes to which idle worker: pure logic, no I/O.

Ready tasks arrive sorted by priority (critical path first). Each goes to an idle worker
whose role fits. A task whose expected files overlap a running task's waits behind one
that doesn't, but only while such a task exists: overlap delays, it never starves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatch
from typing import Any, Protocol

from orchestrator.tasks.index import Need, need_of


class RoleLike(Protocol):
    id: str
    capabilities: list[str]


def fits(task: Any, role: RoleLike) -> bool:
    """Whether a worker of ``role`` may take ``task``: its role, or all its capabilities."""
    return fits_need(need_of(task), role)


def fits_need(need: Need, role: RoleLike) -> bool:
    wanted_role, capabilities = need
    if wanted_role:
        return wanted_role == role.id
    return capabilities <= set(role.capabilities)


def overlap(files: Iterable[str], busy: Iterable[str]) -> bool:
    """Whether two sets of expected paths (or globs, or folders) could touch one file."""
    busy = list(busy)
    for a in files:
        for b in busy:
            if a == b or fnmatch(a, b) or fnmatch(b, a):
                return True
            if a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                return True
    return False


def match(
    ready: Sequence[Any],
    idle: Sequence[str],
    roles: Mapping[str, RoleLike],
    busy_files: Iterable[str],
    needs: Mapping[Need, int] | None = None,
) -> list[tuple[str, Any]]:
    """Pairs (worker id, task) to start now. ``idle`` maps to roles through ``roles``.
    ``needs``: how many of ``ready`` want each requirement (the graph keeps it current;
    counted here when not given).

    Tasks whose files overlap a running task's come after every other ready task. The
    walk stops once every worker is paired, so its cost follows the workers, not the
    length of ``ready``."""
    busy = list(busy_files)
    needs = Counter(need_of(t) for t in ready) if needs is None else needs
    # Of the workers that fit, take the one that fits the fewest ready tasks, so a task
    # any worker can do does not take the only worker another task could use.
    flexibility = {
        w: sum(count for need, count in needs.items() if fits_need(need, roles[w])) for w in idle
    }
    free = [w for w in idle if flexibility[w]]  # the others fit no ready task
    pairs: list[tuple[str, Any]] = []
    later = []

    def place(task: Any) -> None:
        candidates = [w for w in free if fits(task, roles[w])]
        if candidates:
            worker = min(candidates, key=lambda w: flexibility[w])
            free.remove(worker)
            pairs.append((worker, task))

    for task in ready:
        if not free:
            return pairs
        if busy and overlap(task.files, busy):
            later.append(task)
        else:
            place(task)
    for task in later:
        if not free:
            break
        place(task)
    return pairs
