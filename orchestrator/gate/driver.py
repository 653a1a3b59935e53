"""``pd gate``'s loop: the merge queue's decisions (``gate.queue``) carried out with real
git, real gate runs in parallel worktrees, and a target that moves only by
compare-and-swap.

Each run's tree is built when it starts, on the target head or on the run it is stacked
on; a ``Land`` moves the target from the tree that run was built on to the run's own,
so a target that moved meanwhile (someone pushed) refuses the move. Then everything not
landed is planned again on the new head: nothing is landed on a tree it was not tested
on, and nothing is lost.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from orchestrator.gate import branches
from orchestrator.gate.check import Verdict, verdict_of
from orchestrator.gate.queue import MergeQueue
from orchestrator.gate.runner import GateResult, GateSlots
from orchestrator.gate.session import GateSetup
from orchestrator.gate.trees import Branch, build, merged_tree
from orchestrator.gate.types import (
    Cancel,
    Candidate,
    Flaky,
    GateRun,
    Land,
    QueueMisuse,
    Reject,
)
from orchestrator.system import gitutil


@dataclass(frozen=True)
class _Running:
    run: GateRun
    base: str  # the commit its tree was built on
    tree: str  # the commit tested
    slot: int
    generation: int  # runs of an earlier queue (before the target moved) mean nothing


class QueueDriver:
    def __init__(self, setup: GateSetup, found: list[Branch], parallel: int, retries: int) -> None:
        self.repo, self.target = setup.repo, setup.target
        self.branches = {b.name: b for b in found}
        self.order = [b.name for b in found]
        self.parallel, self.retries = parallel, retries
        self.verdicts: dict[str, Verdict] = {}
        self.flaky: set[str] = set()
        self.trees: dict[int, str] = {}  # run id -> its tested commit
        self.results: dict[int, GateResult] = {}
        self.pending: deque[GateRun] = deque()  # started by the queue, waiting for a slot
        self.runs: list[GateRun] = []  # every run launched
        self.free = list(range(parallel))
        self.running: dict[Future[GateResult], _Running] = {}
        self.generation = 0
        self.head = ""
        self.queue = MergeQueue(parallel=parallel, retries=retries)
        # Branches that conflicted only with a branch tried before them, not with the
        # target: planned again, on the new head, once this queue is done.
        self.deferred: list[str] = []

    def run(self, slots: GateSlots) -> list[Verdict]:
        self.slots = slots
        self._plan(self.order)
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="pd-gate") as pool:
            while True:
                self._launch(pool)
                if not self.running and self.deferred:
                    self._plan(self.deferred)  # after what they clashed with landed or not
                    continue
                if not self.running:
                    break
                done, _ = wait(self.running, return_when=FIRST_COMPLETED)
                for future in done:
                    self._finished(self.running.pop(future), future.result())
        missing = [name for name in self.order if name not in self.verdicts]
        if missing:
            raise QueueMisuse(f"the queue ended without deciding {missing}")
        return [self.verdicts[name] for name in self.order]

    # ---- planning ----------------------------------------------------------------------

    def _plan(self, names: list[str]) -> None:
        """A fresh queue on the target's head for ``names``; what the head already holds
        is done (a rerun after a crash merges nothing twice)."""
        self.head = self.target.head()
        self.queue = MergeQueue(parallel=self.parallel, retries=self.retries)
        self.pending.clear()
        self.deferred = []
        self.generation += 1
        for name in names:
            branch = self.branches[name]
            if gitutil.is_ancestor(self.repo, branch.commit, self.head):
                self._verdict(name, "already-merged", f"{self.target.name} holds it")
            else:
                self.queue.add(Candidate(name))

    def _launch(self, pool: ThreadPoolExecutor) -> None:
        while True:
            self.pending.extend(self.queue.start())
            if not self.pending or not self.free:
                return
            run = self.pending.popleft()
            base = self.head if run.base is None else self.trees.get(run.base)
            if base is None:  # the queue cancels what is stacked on a cancelled run
                raise QueueMisuse(f"run {run.run_id} is stacked on run {run.base}, not started")
            members = [self.branches[name] for name in run.ids]
            built = build(self.repo, base, members, _message(run))
            left = [*built.conflicts, *built.already]
            if left:
                for name, paths in built.conflicts.items():
                    if merged_tree(self.repo, self.head, self.branches[name].commit)[0]:
                        self.deferred.append(name)  # only with a branch ahead of it
                    else:
                        why = f"conflicts with {self.target.name} in: {', '.join(paths)}"
                        self._verdict(name, "conflict", why, conflicts=paths)
                    self._decide(self.queue.conflicted(run.run_id, name))
                for name in built.already:
                    self._verdict(name, "already-merged", f"{self.target.name} holds it")
                    self._decide(self.queue.drop(name))
                continue
            assert built.commit is not None  # every member merged in
            self.trees[run.run_id] = built.commit
            self.runs.append(run)
            slot = self.free.pop()
            label = f"run{run.run_id}-{run.kind.value}"
            future = pool.submit(self.slots.run, slot, built.commit, label, run.run_first)
            self.running[future] = _Running(run, base, built.commit, slot, self.generation)

    # ---- results -----------------------------------------------------------------------

    def _finished(self, running: _Running, result: GateResult) -> None:
        self.free.append(running.slot)
        if running.generation != self.generation:
            return  # tested on a head that is gone
        self.results[running.run.run_id] = result
        self._decide(self.queue.finished(running.run.run_id, result.passed, result.failed_tests))

    def _decide(self, decisions: list[object]) -> None:
        for decision in decisions:
            if isinstance(decision, Land):
                self._land(decision)
            elif isinstance(decision, Reject):
                result = self.results[decision.run_id]
                self.verdicts[decision.id] = verdict_of(self.branches[decision.id], result, "")
            elif isinstance(decision, Cancel):
                self.pending = deque(r for r in self.pending if r.run_id != decision.run_id)
                self.trees.pop(decision.run_id, None)
            elif isinstance(decision, Flaky):
                names = ", ".join(self.trees_of(decision.run_id))
                self.flaky |= decision.tests or {f"the tests on the tree of {names}"}

    def trees_of(self, run_id: int) -> list[str]:
        """The branches a run tested (for a flaky report without test names)."""
        return [name for r in self.runs if r.run_id == run_id for name in r.ids]

    def _land(self, land: Land) -> None:
        tree = self.trees[land.run_id]
        old = gitutil.git(self.repo, "rev-parse", f"{tree}^1")  # what it was tested on
        if self.target.advance(old, tree):
            self.head = tree
            for name in land.ids:
                self._verdict(name, "merged", f"landed in {tree[:12]}")
            return
        # The target moved under us: what was not landed is tested again on its new head.
        waiting = [n for n in self.order if n not in self.verdicts]
        self._plan(waiting)

    def _verdict(self, name: str, status: str, reason: str, **extra: list[str]) -> None:
        commit = self.branches[name].commit
        self.verdicts[name] = Verdict(name, status, commit, reason, **extra)  # type: ignore[arg-type]


def run_queue(
    setup: GateSetup, names: list[str], parallel: int, retries: int
) -> tuple[list[Verdict], list[str]]:
    """``pd gate BRANCH...``: every branch that passes lands; the rest are reported.
    Also returns the tests seen to fail and pass on the same tree (flaky)."""
    found = branches.resolve(setup.repo, names, setup.remote)
    slots = setup.slots()
    try:
        driver = QueueDriver(setup, found, parallel, retries)
        return driver.run(slots), sorted(driver.flaky)
    finally:
        slots.close()


def _message(run: GateRun) -> str:
    names = ", ".join(run.ids)
    if len(run.ids) < 4:
        return f"pd gate: merge {names}"
    return f"pd gate: merge {len(run.ids)} branches\n\n{names}"
