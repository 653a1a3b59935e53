"""Finished work waiting to land, as the run sees it: the gate queue (``gate.MergeQueue``:
batches sized from the failure rate, bisection, retries) with the run's bookkeeping.

The merger runs one batch at a time. Each time a task goes to the queue it gets a fresh
key (``task#n``), so a batch lost to a merger crash or pd's own failure goes back as new
candidates, first. A task in the batch being merged stays there if it is aborted: the
batch lands with it or fails without it, and the record says which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from orchestrator.gate import Candidate, Decision
from orchestrator.gate import MergeQueue as GateQueue
from orchestrator.wire.messages import MergeBatch, MergeRequest


@dataclass(frozen=True)
class InFlight:
    run_id: int
    keys: tuple[str, ...]

    def tasks(self) -> list[str]:
        return [task_of(key) for key in self.keys]


def task_of(key: str) -> str:
    return key.rpartition("#")[0]


class MergeQueue:
    def __init__(self, retries: int = 1, max_batch: int = 16) -> None:
        self.retries, self.max_batch = retries, max_batch
        self.gate = GateQueue(parallel=1, retries=retries, max_batch=max_batch)
        self.requests: dict[str, MergeRequest] = {}  # key -> what to merge
        self.key_of: dict[str, str] = {}  # task -> its key now
        self.current: InFlight | None = None
        self.merger_ready = False
        self.gate_logs: dict[int, tuple[str, str]] = {}  # run -> (reason, output tail)
        self.batches: dict[int, list[str]] = {}  # run -> its tasks
        self.priority: dict[str, float] = {}  # task -> its place in the queue
        # Tasks that conflicted only with a batch-mate: out of the queue until the batch
        # that parked them (``parked_run``) is followed by another result.
        self.parked: list[MergeRequest] = []
        self.parked_run = -1
        self._n = 0

    @property
    def idle(self) -> bool:
        return self.current is None and not self.key_of and not self.parked

    def add(self, request: MergeRequest, priority: float = 0, first: bool = False) -> None:
        """``priority``: the task's critical-path length (higher lands first)."""
        self._n += 1
        key = f"{request.task_id}#{self._n}"
        self.requests[key] = request
        self.key_of[request.task_id] = key
        self.priority.setdefault(request.task_id, priority)
        self.gate.add(Candidate(key, math.inf if first else priority))

    def take(self) -> MergeBatch | None:
        """The next batch to send, if the merger is free and ready for one."""
        if self.current is not None or not self.merger_ready:
            return None
        runs = self.gate.start()
        if not runs and self.parked:  # nothing else to merge: what waited goes now
            self.unpark()
            runs = self.gate.start()
        if not runs:
            return None
        (run,) = runs  # one gate at a time: the merger runs them in turn
        self.current = InFlight(run.run_id, run.ids)
        self.batches[run.run_id] = [task_of(key) for key in run.ids]
        items = [self.requests[key].to_dict() for key in run.ids]
        return MergeBatch(run.run_id, items)

    def request(self, task_id: str) -> MergeRequest:
        return self.requests[self.key_of[task_id]]

    def leave(self, task_id: str) -> list[Decision]:
        """The task is out of the queue (merged, rejected, gone back to its agent)."""
        key = self.key_of.pop(task_id, None)
        if key is None:
            return []
        return self.gate.drop(key)

    def park(self, task_id: str, run_id: int) -> None:
        """It conflicts only with a task of batch ``run_id``: it waits for that batch's
        successor (the other task has landed or left by then), then goes on the head."""
        self.parked.append(self.request(task_id))
        self.parked_run = run_id
        self.leave(task_id)

    def unpark(self) -> None:
        parked, self.parked = self.parked, []
        for request in parked:
            self.add(request, self.priority.get(request.task_id, 0), first=True)

    def drop(self, task_id: str) -> list[Decision]:
        """Its task was aborted: forget it, unless its batch is being merged."""
        if self.current is not None and task_id in self.current.tasks():
            return []
        self.parked = [r for r in self.parked if r.task_id != task_id]
        return self.leave(task_id)

    def finished(self, passed: bool) -> list[Decision]:
        """The batch in flight was gated: the queue's decisions."""
        current, self.current = self.current, None
        if current is None:
            return []
        return self.gate.finished(current.run_id, passed)

    def lost(self) -> list[str]:
        """The batch in flight never got a verdict (the merger died or failed): its tasks
        go back first, as new candidates. Returns them."""
        current, self.current = self.current, None
        if current is None:
            return []
        tasks = current.tasks()
        for task in tasks:
            request = self.request(task)
            self.leave(task)
            self.add(request, first=True)
        return tasks

    def merger_lost(self) -> list[str]:
        self.merger_ready = False
        return self.lost()

    def view(self) -> dict[str, Any]:
        current = self.current.tasks() if self.current else []
        waiting = [task_of(key) for key in self.gate.open()]
        return {
            "task": current[0] if current else None,
            "batch": current,
            "queue": [t for t in waiting if t not in current],
        }
