"""Finished work waiting to land, as the run sees it: the gate queue (``gate.MergeQueue``:
batches sized from the failure rate, bisection, retries, stacking) with the run's
bookkeeping.

With one gate (``parallel`` 1) the merger has one batch at a time and lands it when it
passes. With W gates it has up to W at once, some stacked on others; a run that passed
waits for the queue's ``Land`` (``landings``: the merger is told ``LandRun``) and one the
queue cancels is stopped (``cancels``: ``CancelRun``). Each time a task goes to the queue
it gets a fresh key (``task#n``), so a batch lost to a merger crash or pd's own failure
goes back as new candidates, first. A task in a batch at the merger stays there if it is
aborted: the batch lands with it or fails without it, and the record says which.

Run ids on the wire are the run's own, not the gate queue's: if the target moves under
a landing (someone else committed to it), the gate queue's picture of the trees is void
and a fresh one takes over (``restart``), while answers about the old runs may still come.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.gate import Cancel, Candidate, Decision, Land
from orchestrator.gate import MergeQueue as GateQueue
from orchestrator.wire.messages import MergeBatch, MergeRequest


@dataclass
class InFlight:
    """A batch at the merger: gating, tested (waiting for a decision) or landing."""

    run_id: int
    keys: tuple[str, ...]
    base_run: int = 0  # the run it is stacked on (0: the target head)
    seconds: float = 0.0  # how long its gate took, once it reported
    generation: int = 0  # landing: how many restarts came before it was asked to land

    def tasks(self) -> list[str]:
        return [task_of(key) for key in self.keys]


@dataclass
class _Ids:
    """The gate queue's run ids and the run's wire ids (one gate queue's worth)."""

    wire: dict[int, int] = field(default_factory=dict)  # gate queue run -> wire run
    core: dict[int, int] = field(default_factory=dict)  # wire run -> gate queue run

    def add(self, core: int, wire: int) -> None:
        self.wire[core], self.core[wire] = wire, core

    def decision(self, decision: Decision) -> Decision:
        return replace(decision, run_id=self.wire.get(decision.run_id, decision.run_id))


def task_of(key: str) -> str:
    return key.rpartition("#")[0]


class MergeQueue:
    def __init__(self, retries: int = 1, max_batch: int = 16, parallel: int = 1) -> None:
        self.retries, self.max_batch, self.parallel = retries, max_batch, parallel
        self.gate = self._fresh_gate()
        self.requests: dict[str, MergeRequest] = {}  # key -> what to merge
        self.key_of: dict[str, str] = {}  # task -> its key now
        self.running: dict[int, InFlight] = {}  # sent, no result yet
        self.landing: dict[int, InFlight] = {}  # LandRun sent, no answer yet
        self.seconds: dict[int, float] = {}  # run -> how long its gate took
        self.landings: list[int] = []  # runs to send LandRun for
        self.cancels: list[int] = []  # runs to send CancelRun for
        self.merger_ready = False
        self.gate_logs: dict[int, tuple[str, str]] = {}  # run -> (reason, output tail)
        self.batches: dict[int, list[str]] = {}  # run -> its tasks
        self.priority: dict[str, float] = {}  # task -> its place in the queue
        # Tasks that conflicted only with a batch-mate: out of the queue until the batch
        # that parked them (``parked_run``) is followed by another result.
        self.parked: list[MergeRequest] = []
        self.parked_run = -1
        self._n = 0
        self._runs = 0  # the last wire run id given
        self._ids = _Ids()
        self.generation = 0  # restarts so far

    def _fresh_gate(self) -> GateQueue:
        return GateQueue(parallel=self.parallel, retries=self.retries, max_batch=self.max_batch)

    @property
    def lands_itself(self) -> bool:
        """One gate: the merger lands a batch that passes (the queue's answer is Land)."""
        return self.parallel == 1

    @property
    def current(self) -> InFlight | None:
        """The batch at the merger (the first, with parallel gates)."""
        return next(iter(self.running.values()), None)

    @property
    def idle(self) -> bool:
        return not self.at_merger() and not self.key_of and not self.parked

    def at_merger(self) -> list[InFlight]:
        """The batches the merger has: gating, or landing. (A batch that passed and
        waits for the one below it is the gate queue's; the merger keeps its tree.)"""
        return [*self.running.values(), *self.landing.values()]

    def held(self) -> set[str]:
        """The tasks of every batch the merger has."""
        return {task for run in self.at_merger() for task in run.tasks()}

    def holds(self, task_id: str) -> bool:
        return any(task_id in run.tasks() for run in self.at_merger())

    def add(self, request: MergeRequest, priority: float = 0, first: bool = False) -> None:
        """``priority``: the task's critical-path length (higher lands first)."""
        self._n += 1
        key = f"{request.task_id}#{self._n}"
        self.requests[key] = request
        self.key_of[request.task_id] = key
        self.priority.setdefault(request.task_id, priority)
        self.gate.add(Candidate(key, math.inf if first else priority))

    def take(self) -> list[MergeBatch]:
        """The batches to send now, in order (a run's base before it), if the merger is
        ready for them."""
        if not self.merger_ready:
            return []
        runs = self.gate.start()
        if not runs and self.parked and not self.running:  # nothing else: what waited goes
            self.unpark()
            runs = self.gate.start()
        batches = []
        for run in runs:
            self._runs += 1
            wire = self._runs
            self._ids.add(run.run_id, wire)
            base = 0 if run.base is None else self._ids.wire[run.base]
            self.running[wire] = InFlight(wire, run.ids, base)
            self.batches[wire] = [task_of(key) for key in run.ids]
            items = [self.requests[key].to_dict() for key in run.ids]
            first = sorted(run.run_first)
            batches.append(
                MergeBatch(wire, items, base_run=base, land=self.lands_itself, run_first=first)
            )
        return batches

    def request(self, task_id: str) -> MergeRequest:
        return self.requests[self.key_of[task_id]]

    def leave(self, task_id: str) -> list[Decision]:
        """The task is out of the queue (merged, rejected, gone back to its agent)."""
        key = self.key_of.pop(task_id, None)
        if key is None:
            return []
        return self._decided(self.gate.drop(key))

    def park(self, task_id: str, run_id: int) -> None:
        """It conflicts only with a task of batch ``run_id`` (or of the tree below it):
        it waits for that batch's successor (the other task has landed or left by
        then), then goes on the head."""
        self.parked.append(self.request(task_id))
        self.parked_run = run_id
        self.leave(task_id)

    def unpark(self) -> None:
        parked, self.parked = self.parked, []
        for request in parked:
            self.add(request, self.priority.get(request.task_id, 0), first=True)

    def drop(self, task_id: str) -> list[Decision]:
        """Its task was aborted: forget it, unless its batch is at the merger."""
        if self.holds(task_id):
            return []
        self.parked = [r for r in self.parked if r.task_id != task_id]
        return self.leave(task_id)

    def finished(
        self, run_id: int, passed: bool, seconds: float = 0.0, tests: Iterable[str] = ()
    ) -> list[Decision]:
        """Run ``run_id`` was gated: the queue's decisions. With parallel gates a ``Land``
        is not returned but queued for the merger (``landings``); its tasks land when
        the merger says it moved the target."""
        if self.running.pop(run_id, None) is None:
            return []  # cancelled, or lost with a merger that died
        self.seconds[run_id] = seconds
        return self._decided(self.gate.finished(self._ids.core[run_id], passed, tests))

    def landed(self, run_id: int) -> InFlight | None:
        """The merger answered ``LandRun``: the run, if it was landing."""
        return self.landing.pop(run_id, None)

    def lost(self, run_id: int) -> list[str]:
        """The batch never got a verdict (the merger died or failed, or some of it left
        before the gate): its tasks go back first, as new candidates. Returns them."""
        run = self.running.pop(run_id, None) or self.landing.pop(run_id, None)
        if run is None:
            return []
        tasks = [t for t in run.tasks() if t in self.key_of]
        for task in tasks:
            request = self.request(task)
            self.leave(task)
            self.add(request, first=True)
        return tasks

    def merger_lost(self) -> list[str]:
        """The merger died: every batch it had goes back first (what had landed, the
        next merger finds in the target), and it is told nothing of them. With parallel
        gates the trees it kept are gone too: a fresh gate queue takes over."""
        self.merger_ready = False
        lost = [t for run in self.at_merger() for t in run.tasks() if t in self.key_of]
        if self.lands_itself:
            for run in list(self.running):
                self.lost(run)
        else:
            self.landing.clear()
            self.restart(first=set(lost))
        self.landings.clear()
        self.cancels.clear()
        return lost

    def restart(self, first: set[str] | None = None) -> None:
        """The trees the gate queue stacked on are void (the target moved under a
        landing, or the merger died): a fresh gate queue for every task waiting, ``first``
        (default: all) ahead; what the merger was gating is cancelled. Landings already
        asked for are still answered (one may land: it was tested on the head it lands on)."""
        self.cancels += list(self.running)
        self.running.clear()
        self.landings.clear()
        self.gate, self._ids = self._fresh_gate(), _Ids()
        self.generation += 1
        for task in list(self.key_of):
            request = self.request(task)
            del self.key_of[task]
            ahead = first is None or task in first
            self.add(request, self.priority.get(task, 0), first=ahead)

    def _decided(self, decisions: list[Decision]) -> list[Decision]:
        """The queue's decisions in wire ids; its cancels and (parallel gates) its lands
        become messages for the merger."""
        out: list[Decision] = []
        for decision in map(self._ids.decision, decisions):
            if isinstance(decision, Cancel):
                if self.running.pop(decision.run_id, None) is not None:
                    self.cancels.append(decision.run_id)  # its gate still runs: stop it
            elif isinstance(decision, Land) and not self.lands_itself:
                seconds = self.seconds.get(decision.run_id, 0.0)
                run = InFlight(decision.run_id, decision.ids, 0, seconds, self.generation)
                self.landing[decision.run_id] = run
                self.landings.append(decision.run_id)
            else:
                out.append(decision)
        return out

    def view(self) -> dict[str, Any]:
        gating = [run.tasks() for run in self.at_merger()]
        batch = [task for tasks in gating for task in tasks]
        waiting = [task_of(key) for key in self.gate.open()]
        return {
            "task": batch[0] if batch else None,
            "batch": batch,
            "gates": len(self.running),
            "queue": [t for t in waiting if t not in batch],
        }
