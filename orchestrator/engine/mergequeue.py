"""Finished work waiting for the merger: one merge at a time, critical path first.

Bookkeeping only; the steps do the sending. Among waiting merges, the one whose task
heads the longest chain of work still to do goes first (its dependents wait for it),
then the one that finished first. If the merger dies mid-merge, its request goes back
in front of everything, so a crash never loses or reorders finished work.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from orchestrator.wire.messages import MergeRequest


class MergeQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, MergeRequest]] = []
        self._seq = 0
        self.current: MergeRequest | None = None
        self.merger_ready = False

    @property
    def idle(self) -> bool:
        return self.current is None and not self._heap

    def add(self, request: MergeRequest, priority: float = 0) -> None:
        """``priority``: the task's critical-path length (higher merges first)."""
        self._seq += 1
        heapq.heappush(self._heap, (-priority, self._seq, request))

    def take(self) -> MergeRequest | None:
        """The next request to send, if the merger is free and ready for one."""
        if self.current is None and self.merger_ready and self._heap:
            self.current = heapq.heappop(self._heap)[2]
            return self.current
        return None

    def finished(self) -> None:
        self.current = None

    def merger_lost(self) -> str | None:
        """The merger died: requeue what it was merging, first; returns that task's id."""
        self.merger_ready = False
        lost, self.current = self.current, None
        if lost is None:
            return None
        heapq.heappush(self._heap, (-math.inf, -self._seq, lost))
        return lost.task_id

    def drop(self, task_id: str) -> None:
        """Forget a waiting request (its task was aborted); one being merged runs on."""
        self._heap = [item for item in self._heap if item[2].task_id != task_id]
        heapq.heapify(self._heap)

    def waiting(self) -> list[MergeRequest]:
        """The waiting requests in the order they will go."""
        return [item[2] for item in sorted(self._heap)]

    def view(self) -> dict[str, Any]:
        return {
            "task": self.current.task_id if self.current else None,
            "queue": [r.task_id for r in self.waiting()],
        }
