"""The merge queue: which gate runs to start, and what their results decide.

A state machine with no I/O. The driver (``pd run``'s merger, ``pd gate`` in CI) adds
candidates, asks ``start()`` for runs, builds each run's tree and runs the gate on it,
and reports ``finished()``; the queue answers with decisions (land, reject, cancel,
flaky) and the driver carries them out. Keeping the decisions pure lets a hypothesis
state machine check the invariants that matter (every landed tree was tested and
passed; the lands form a chain; no good candidate is rejected by a deterministic gate)
over thousands of random queues in a second.

Planning each free slot, in this order:

1. LAND: candidates that passed on a tree that could not land go in one run, stacked on
   the newest LAND run that can still land (else the target), once no run in flight
   could clear more of them (a LAND run carries no information: one for all), except
   runs sure to fail (a retry, a lone suspect), and no later than ``4 * parallel``
   results after the first began to wait;
2. BISECT / RETRY: each group of suspects (a failed run's candidates) has its first part
   run (``batching.split_size``); a suspect alone is run alone, retried ``retries`` times
   before it is rejected, failing tests first; with ``retries`` > 0 both of a pair run
   alone at once (both must run alone anyway);
3. BATCH: untested candidates by priority, ``batching.batch_size`` at a time (with
   several gates and nothing in flight, spread over the free slots so every gate has
   work; later leftovers go together);
4. gates still idle split the groups of step 2 several ways at once instead of halving
   them (fewer rounds of bisection: with parallel gates the wall time is its depth).

With ``parallel`` > 1 new runs stack on the newest active LAND run (if any, else the
target), so the first of them to pass lands on it; the others become LAND work.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

from orchestrator.gate.batching import batch_size, failure_rate, split_size
from orchestrator.gate.knowledge import Knowledge
from orchestrator.gate.runs import Run, RunState, Stack
from orchestrator.gate.types import (
    Cancel,
    Candidate,
    Decision,
    Flaky,
    GateRun,
    Land,
    Outcome,
    QueueMisuse,
    Reject,
    RunKind,
)


class Outcomes(dict[str, Outcome]):
    """How each candidate ended, with running tallies: the planner reads them on every
    ``start()``, and a scan of every candidate there made a long run's queue quadratic."""

    def __init__(self, open_ids: dict[str, None]) -> None:
        super().__init__()
        self.open_ids = open_ids  # the queue's candidates without an outcome, in order
        self.counts: Counter[Outcome] = Counter()
        self.landed: set[str] = set()
        self.gone: set[str] = set()  # rejected, dropped or conflicted

    def __setitem__(self, cid: str, outcome: Outcome) -> None:
        if cid in self:
            raise QueueMisuse(f"candidate {cid!r} already ended ({self[cid].value})")
        super().__setitem__(cid, outcome)
        self.open_ids.pop(cid, None)
        self.counts[outcome] += 1
        (self.landed if outcome is Outcome.LANDED else self.gone).add(cid)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for cid, outcome in dict(*args, **kwargs).items():
            self[cid] = outcome


class MergeQueue:
    """Decides batches, bisection, retries and landing for the branches given to it."""

    def __init__(
        self,
        parallel: int = 1,
        retries: int = 1,
        prior_failure_rate: float = 0.1,
        max_batch: int = 32,
    ) -> None:
        for name, value, ok, rule in [
            ("parallel", parallel, parallel >= 1, "at least 1"),
            ("retries", retries, retries >= 0, "0 or more"),
            ("max_batch", max_batch, max_batch >= 1, "at least 1"),
            ("prior_failure_rate", prior_failure_rate, 0 < prior_failure_rate < 1, "in (0, 1)"),
        ]:
            if not ok:
                raise QueueMisuse(f"MergeQueue {name}={value}: must be {rule}")
        self.parallel = parallel
        self.retries = retries
        self.prior = prior_failure_rate
        self.max_batch = max_batch
        self._candidates: dict[str, tuple[float, int]] = {}  # id -> sort key
        self._open: dict[str, None] = {}  # candidates without an outcome, as added
        self.outcome = Outcomes(self._open)
        self._facts = Knowledge()
        self._stack = Stack()
        self._reported = 0  # results reported so far: the queue's clock
        self._cleared_since: int | None = None  # _reported when cleared ones began waiting
        self._tried: dict[int, tuple[bool, frozenset[str]]] = {}  # by tree (runs.Trees)

    # -- the driver's calls ---------------------------------------------------------

    def add(self, candidate: Candidate) -> None:
        if candidate.id in self._candidates:
            raise QueueMisuse(f"candidate {candidate.id!r} was already added")
        self._candidates[candidate.id] = (-candidate.priority, len(self._candidates))
        self._open[candidate.id] = None

    def drop(self, cid: str) -> list[Decision]:
        """``cid`` was aborted: it leaves, and any run holding it is cancelled."""
        if self._known(cid) in self.outcome:
            return []
        return self._leave(cid, Outcome.DROPPED, self._holding(cid))

    def conflicted(self, run_id: int, cid: str) -> list[Decision]:
        """Building ``run_id``'s tree, ``cid`` conflicted: it leaves; the run is cancelled
        (with what is stacked on it) and its other candidates are planned again."""
        run = self._run(run_id)
        if cid not in run.gate.ids or run.state is not RunState.ACTIVE:
            raise QueueMisuse(f"run {run_id} is not an active run holding {cid!r}")
        return self._leave(cid, Outcome.CONFLICTED, run)

    def start(self) -> list[GateRun]:
        """The runs to start now (up to ``parallel`` in flight), in order: a run's base
        is always started before it."""
        free = self.parallel - len(self._stack.active())
        started: list[GateRun] = []
        if free <= 0:
            return started
        busy = self._stack.in_flight()
        landing = self._stack.landing_top()
        cleared = self._order(c for c in self._facts.cleared if c not in busy)
        if cleared and self._land_now():
            below = landing.gate.run_id if landing is not None else None
            landing = self._begin(tuple(cleared), below, RunKind.LAND, frozenset())
            started.append(landing.gate)
            busy |= set(cleared)
            self._cleared_since = None
        base = landing.gate.run_id if landing is not None else None
        for ids, kind in self._plan(busy, self.parallel - len(self._stack.active())):
            run_first = frozenset().union(*(self._facts.last_failed_tests.get(c, ()) for c in ids))
            started.append(self._begin(ids, base, kind, run_first).gate)
        return started

    def finished(
        self, run_id: int, passed: bool, failed_tests: Iterable[str] = ()
    ) -> list[Decision]:
        """The gate on ``run_id``'s tree passed or failed (naming the failing tests when
        it can). Results of cancelled runs are ignored."""
        run = self._run(run_id)
        if run.state is RunState.CANCELLED:
            return []
        if run.result is not None or run.state is RunState.DONE:
            raise QueueMisuse(f"run {run_id}'s result was already reported")
        run.result = (passed, frozenset(failed_tests))
        self._reported += 1
        out: list[Decision] = []
        if not passed:
            out += [Cancel(r) for r in self._stack.cancel_above(run_id)]
        if self._stack.base_passed(run):
            out += self._settle_run(run)
        return out + self._infer()

    # -- what the driver may read ---------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing left to decide."""
        return not self._stack.active() and len(self.outcome) == len(self._candidates)

    def open(self) -> list[str]:
        """Candidates not yet landed, rejected, dropped or conflicted, by priority."""
        return self._order(self._open)

    # -- inside ---------------------------------------------------------------------

    def _land_now(self) -> bool:
        """Whether the cleared candidates go in a LAND run now. A LAND run carries no
        information, so they wait until no run in flight could clear more of them (one
        LAND for all, not one per result), but no longer than ``4 * parallel`` results
        (some four rounds), so a queue that keeps receiving work still lands. A run that
        holds a whole group of suspects will fail (a retry, a lone suspect): it is not
        waited for."""
        if self._cleared_since is None:
            self._cleared_since = self._reported
        if self._reported - self._cleared_since >= 4 * self.parallel:
            return True
        groups = self._groups()
        return not any(
            run.result is None
            and run.gate.kind is not RunKind.LAND
            and not any(group <= set(run.gate.ids) for group in groups)
            for run in self._stack.active()
        )

    def _plan(self, busy: set[str], free: int) -> list[tuple[tuple[str, ...], RunKind]]:
        plans: list[tuple[tuple[str, ...], RunKind]] = []
        splittable: list[tuple[int, list[str]]] = []  # (plan index, its group in order)
        rate = self._rate()
        for group in self._groups():
            if len(plans) >= free:
                return plans
            if group & busy:
                continue  # one question about a group at a time
            ordered = self._order(group)
            busy |= group
            if len(ordered) == 1:
                kind = RunKind.RETRY if self._facts.alone[ordered[0]] else RunKind.BISECT
                plans.append(((ordered[0],), kind))
            elif len(ordered) == 2 and self.retries and free - len(plans) >= 2:
                # both must run alone anyway (a broken one twice): at once, not in turn
                plans += [((ordered[0],), RunKind.BISECT), ((ordered[1],), RunKind.BISECT)]
            else:
                splittable.append((len(plans), ordered))
                plans.append((tuple(ordered[: split_size(len(ordered), rate)]), RunKind.BISECT))
        plans += self._batches(busy, free - len(plans), rate)
        return self._split_wider(plans, splittable, free - len(plans))

    def _batches(
        self, busy: set[str], free: int, rate: float
    ) -> list[tuple[tuple[str, ...], RunKind]]:
        """Untested candidates by priority, ``batch_size`` at a time. A queue with nothing
        in flight spreads them over its free gates (smaller batches bisect faster); later,
        leftovers go together, so they do not take gates from bisection."""
        suspects = set().union(*self._groups())
        skip = busy | suspects | self._facts.cleared
        waiting = [c for c in self.open() if c not in skip]
        size = batch_size(rate, self.max_batch)
        if self.parallel > 1 and not self._stack.active() and free > 0:
            size = min(size, math.ceil(len(waiting) / free))
        plans: list[tuple[tuple[str, ...], RunKind]] = []
        while waiting and len(plans) < free:
            plans.append((tuple(waiting[:size]), RunKind.BATCH))
            waiting = waiting[size:]
        return plans

    @staticmethod
    def _split_wider(
        plans: list[tuple[tuple[str, ...], RunKind]],
        splittable: list[tuple[int, list[str]]],
        spare: int,
    ) -> list[tuple[tuple[str, ...], RunKind]]:
        """Gates left idle split failed groups k ways instead of halving them: each part
        runs at once, so the broken ones are found in fewer rounds (the wall time is the
        depth of bisection). With one gate there is never a spare one."""
        for index, ordered in splittable:
            if spare <= 0:
                break
            ways = min(len(ordered), spare + 1)
            cuts = [len(ordered) * j // ways for j in range(ways + 1)]
            parts = [tuple(ordered[a:b]) for a, b in pairwise(cuts)]
            plans[index] = (parts[0], RunKind.BISECT)
            plans += [(part, RunKind.BISECT) for part in parts[1:]]
            spare -= ways - 1
        return plans

    def _begin(
        self, ids: tuple[str, ...], base: int | None, kind: RunKind, first: frozenset[str]
    ) -> Run:
        gate = GateRun(self._stack.new_id(), ids, base, kind, first)
        return self._stack.start(ids, base, gate)

    def _settle_run(self, run: Run) -> list[Decision]:
        """Take ``run``'s result into account (its base passed), then its held children's."""
        assert run.result is not None
        passed, tests = run.result
        run.state, run.passed = RunState.DONE, passed
        out = self._flaky(run, passed, tests)
        ids = run.gate.ids
        if passed:
            lands = self._stack.can_land(run)
            self._facts.record_pass(ids, lands)
            if lands:
                self._stack.land(run)
                self.outcome.update(dict.fromkeys(ids, Outcome.LANDED))
                out.append(Land(run.gate.run_id, ids))
            for child in self._stack.children(run.gate.run_id):
                if child.result is not None:
                    out += self._settle_run(child)
            return out
        self._facts.record_fail(ids, tests)
        if len(ids) == 1 and self._facts.alone[ids[0]] > self.retries:
            times = self._facts.alone[ids[0]]
            out.append(self._reject(ids[0], run, f"failed alone {times} times"))
        return out

    def _flaky(self, run: Run, passed: bool, tests: frozenset[str]) -> list[Decision]:
        """Report tests seen failing and passing on the same tree."""
        before = self._tried.get(run.tree)
        self._tried[run.tree] = (passed, tests | (before[1] if before else frozenset()))
        if before is None or before[0] == passed:
            return []
        failing = tests if not passed else before[1]
        return [Flaky(run.gate.run_id, failing)]  # no names: the driver could not tell which

    def _infer(self) -> list[Decision]:
        """With ``retries=0`` the gate is trusted: a failed set whose every other member
        passed convicts the last one without running it alone."""
        if self.retries:
            return []
        busy = self._stack.in_flight()
        out: list[Decision] = []
        for group in self._groups():
            if len(group) == 1 and not group & busy:
                (cid,) = group
                out.append(self._reject(cid, None, "failed in a batch whose others passed"))
        return out

    def _reject(self, cid: str, run: Run | None, reason: str) -> Reject:
        self.outcome[cid] = Outcome.REJECTED
        run_id = run.gate.run_id if run is not None else self._last_failed_run(cid)
        return Reject(cid, run_id, reason, self._facts.last_failed_tests.get(cid, frozenset()))

    def _last_failed_run(self, cid: str) -> int:
        failed = [r for r in self._stack.runs.values() if r.passed is False and cid in r.gate.ids]
        return failed[-1].gate.run_id

    def _leave(self, cid: str, outcome: Outcome, run: Run | None) -> list[Decision]:
        self.outcome[cid] = outcome
        self._facts.cleared.discard(cid)
        out: list[Decision] = []
        if run is not None:
            run.state = RunState.CANCELLED
            out.append(Cancel(run.gate.run_id))
            out += [Cancel(r) for r in self._stack.cancel_above(run.gate.run_id)]
        return out + self._infer()

    def _groups(self) -> list[frozenset[str]]:
        if not self._facts.failed:
            return []
        groups = self._facts.groups(self.outcome.landed, self.outcome.gone)
        return sorted(groups, key=lambda g: min(self._candidates[c] for c in g))

    def _rate(self) -> float:
        counts = self.outcome.counts
        return failure_rate(self.prior, counts[Outcome.REJECTED], counts[Outcome.LANDED])

    def _order(self, ids: Iterable[str]) -> list[str]:
        return sorted(ids, key=self._candidates.__getitem__)

    def _holding(self, cid: str) -> Run | None:
        return next((r for r in self._stack.active() if cid in r.gate.ids), None)

    def _known(self, cid: str) -> str:
        if cid not in self._candidates:
            raise QueueMisuse(f"unknown candidate {cid!r}: add() it first")
        return cid

    def _run(self, run_id: int) -> Run:
        if run_id not in self._stack.runs:
            raise QueueMisuse(f"unknown run {run_id}: only runs from start() can finish")
        return self._stack.runs[run_id]
