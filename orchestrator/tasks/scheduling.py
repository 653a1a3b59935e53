"""Which ready task goes to which idle worker: pure logic, no I/O.

Ready tasks arrive sorted by priority (critical path first). Each goes to an idle worker
whose role fits. A task whose expected files overlap a running task's waits behind one
that doesn't, but only while such a task exists: overlap delays, it never starves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatch
from typing import Any, Protocol


class RoleLike(Protocol):
    id: str
    capabilities: list[str]


def fits(task: Any, role: RoleLike) -> bool:
    """Whether a worker of ``role`` may take ``task``: its role, or all its capabilities."""
    wanted_role = getattr(task, "role", None)
    if wanted_role:
        return wanted_role == role.id
    return set(getattr(task, "capabilities", []) or []) <= set(role.capabilities)


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
) -> list[tuple[str, Any]]:
    """Pairs (worker id, task) to start now. ``idle`` maps to roles through ``roles``."""
    busy = list(busy_files)
    free = list(idle)
    apart = [t for t in ready if not overlap(t.files, busy)]
    pairs = []
    # Of the workers that fit, take the one that fits the fewest ready tasks, so a task
    # any worker can do does not take the only worker another task could use.
    flexibility = {w: sum(fits(t, roles[w]) for t in ready) for w in free}
    for task in apart + [t for t in ready if t not in apart]:
        candidates = [w for w in free if fits(task, roles[w])]
        if not candidates:
            continue
        worker = min(candidates, key=lambda w: flexibility[w])
        free.remove(worker)
        pairs.append((worker, task))
        if not free:
            break
    return pairs
