"""Finished work waiting for the merger: one merge at a time, in the order it finished.

Bookkeeping only; the coordinator does the sending. If the merger dies mid-merge, the
request goes back to the front, so a crash never loses or reorders finished work.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from orchestrator.wire.messages import MergeRequest


class MergeQueue:
    def __init__(self) -> None:
        self.waiting: deque[MergeRequest] = deque()
        self.current: MergeRequest | None = None
        self.merger_ready = False

    @property
    def idle(self) -> bool:
        return self.current is None and not self.waiting

    def add(self, request: MergeRequest) -> None:
        self.waiting.append(request)

    def take(self) -> MergeRequest | None:
        """The next request to send, if the merger is free and ready for one."""
        if self.current is None and self.merger_ready and self.waiting:
            self.current = self.waiting.popleft()
            return self.current
        return None

    def finished(self) -> None:
        self.current = None

    def merger_lost(self) -> str | None:
        """The merger died: requeue what it was merging; returns that task's id."""
        self.merger_ready = False
        lost, self.current = self.current, None
        if lost is None:
            return None
        self.waiting.appendleft(lost)
        return lost.task_id

    def drop(self, task_id: str) -> None:
        """Forget a waiting request (its task was aborted); one being merged runs on."""
        self.waiting = deque(r for r in self.waiting if r.task_id != task_id)

    def view(self) -> dict[str, Any]:
        return {
            "task": self.current.task_id if self.current else None,
            "queue": [r.task_id for r in self.waiting],
        }
