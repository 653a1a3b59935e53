"""The runs in flight and the stack they form, kept apart from what they taught us.

A run is stacked on a base (the target head when it started, or another run). Its
result is taken into account only once everything below it passed: a failure above a
run that also fails says nothing about its own candidates. So results wait here
(``held``) until their base has passed, and a failure cancels everything stacked on it
at once. A run lands only if its base is the target at that moment: base ``None`` and
nothing landed since it started, or its base is the run that landed last. A run that
passes otherwise is still worth its information (its candidates passed) but not its tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from orchestrator.gate.types import GateRun, RunKind


class RunState(Enum):
    ACTIVE = "active"  # started, no result yet, or a result waiting for its base
    DONE = "done"  # its result was taken into account
    CANCELLED = "cancelled"


class Trees:
    """Each tree (the candidates merged into it, in order, since the start) as a number:
    a trie of (tree, next candidate) -> tree. A run's tree then costs its own candidates,
    not the whole history (a tuple of every landed candidate per run was quadratic in
    time and memory over a long queue), and two runs with the same candidates in the
    same order get the same number, however they were stacked."""

    EMPTY = 0

    def __init__(self) -> None:
        self._next: dict[tuple[int, str], int] = {}

    def extend(self, tree: int, ids: tuple[str, ...]) -> int:
        for cid in ids:
            step = (tree, cid)
            tree = self._next.get(step) or self._next.setdefault(step, len(self._next) + 1)
        return tree


@dataclass
class Run:
    """A started run and what it needs to decide landing and flakiness."""

    gate: GateRun
    start_target: int | None  # the run that had landed last when this one started
    tree: int  # its tree: every candidate in it, in merge order, since the start (Trees)
    state: RunState = RunState.ACTIVE
    result: tuple[bool, frozenset[str]] | None = None  # reported, waiting for its base
    passed: bool | None = None  # once DONE


class Stack:
    """All runs by id, the target's tree, and the stacking relation between runs."""

    def __init__(self) -> None:
        self.runs: dict[int, Run] = {}
        # Runs that may still be active (a run never becomes active again): ``active()``
        # is asked on every plan, and a scan of every run ever made was quadratic.
        self._maybe_active: dict[int, Run] = {}
        self.last_landed: int | None = None
        self.trees = Trees()
        self.landed_tree = Trees.EMPTY
        self._next_id = 1

    def start(self, ids: tuple[str, ...], base: int | None, gate: GateRun) -> Run:
        below = self.landed_tree if base is None else self.runs[base].tree
        run = Run(gate, self.last_landed, self.trees.extend(below, ids))
        self.runs[gate.run_id] = self._maybe_active[gate.run_id] = run
        return run

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def active(self) -> list[Run]:
        live = [r for r in self._maybe_active.values() if r.state is RunState.ACTIVE]
        if len(live) != len(self._maybe_active):
            self._maybe_active = {r.gate.run_id: r for r in live}
        return live

    def in_flight(self) -> set[str]:
        return {cid for run in self.active() for cid in run.gate.ids}

    def base_passed(self, run: Run) -> bool:
        """Whether everything below ``run`` passed (its result can be used)."""
        base = run.gate.base
        return base is None or self.runs[base].passed is True

    def can_land(self, run: Run) -> bool:
        """Its base is the target, and no LAND run waits on the same target: the LAND
        run carries many candidates, so a probe that passes first yields to it (its
        candidates go in the next LAND) rather than leave it on a stale tree."""
        if self.last_landed != self.on(run):
            return False
        rivals = [r for r in self.active() if r is not run and self.on(r) == self.on(run)]
        return run.gate.kind is RunKind.LAND or not any(r.gate.kind is RunKind.LAND for r in rivals)

    @staticmethod
    def on(run: Run) -> int | None:
        """The landed run (or None: the start) this run's tree is built on if its base
        lands: its base run, or the target when it started."""
        return run.gate.base if run.gate.base is not None else run.start_target

    def land(self, run: Run) -> None:
        self.last_landed = run.gate.run_id
        self.landed_tree = run.tree

    def children(self, run_id: int) -> list[Run]:
        """Active runs stacked directly on ``run_id``, oldest first."""
        return [r for r in self.active() if r.gate.base == run_id]

    def cancel_above(self, run_id: int) -> list[int]:
        """Cancel every active run stacked (at any depth) on ``run_id``; their ids."""
        cancelled: list[int] = []
        for child in self.children(run_id):
            child.state = RunState.CANCELLED
            cancelled += [child.gate.run_id, *self.cancel_above(child.gate.run_id)]
        return cancelled

    def landing_top(self) -> Run | None:
        """The newest active LAND run that can still land and has not failed: the top of
        the chain of LAND runs, where a new LAND run or new work stacks."""
        for run in reversed(self.active()):
            failed = run.result is not None and not run.result[0]
            if run.gate.kind is RunKind.LAND and not failed and self._can_still_land(run):
                return run
        return None

    def _can_still_land(self, run: Run) -> bool:
        base = run.gate.base
        if base is None:
            return self.last_landed == run.start_target
        below = self.runs[base]
        if below.state is RunState.ACTIVE:
            return self._can_still_land(below)
        return self.last_landed == base
