"""The merge queue's batching core (orchestrator/gate) against serial and bors-style
halving, on simulated gates and once on real git.

Run ``python bench/bench_gate.py [--quick]``. Like every bench here it asserts nothing:
each figure is a mean over many seeded queues, printed next to its goal. A simulated
gate knows which branches are broken (each with probability p, drawn per seed); a run
fails if its tree holds a broken branch, or, with a flake rate f, with probability f for
each good branch the run adds. A gate run takes 1 unit of time ±10% (seeded), so
parallel runs finish in a random order.

1. K=32, p=0.1, one gate: mean gate runs, beside serial (one branch a run), bors-style
   halving (a failed batch is split in two and both halves run) and K·H(p), the fewest
   runs on average that can tell the branches apart. Shown for ``retries=0`` (the gate
   is trusted: the last suspect of a failed batch is rejected without running alone)
   and ``retries=1`` (the default: a branch must fail alone twice).
2. The same with 8 gates at once: mean runs and mean wall time in gate runs.
3. f=0.02: good branches wrongly rejected per 32 (``retries=1``).
4. Lands that moved the target to a tree that was not tested, or did not pass, or was
   not the previous target plus the run's branches: counted over every queue above.
5. Real git: K=16 branches each adding a file, the broken ones a file holding BROKEN;
   the gate is ``! grep -rq BROKEN .`` on ``git archive`` of the run's commit (one
   commit per run, built by ``gate.trees.build``: the merged tree, parents the base
   and the branches); a land is ``git update-ref refs/heads/main NEW OLD``. Then every
   commit on main's first-parent history since the start is checked against the trees
   that passed.
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from _common import new_repo, run_git, say

from orchestrator.gate import (
    Cancel,
    Candidate,
    Decision,
    GateRun,
    Land,
    MergeQueue,
    Reject,
    RunKind,
)
from orchestrator.gate.batching import entropy_bound
from orchestrator.gate.trees import Branch, build


class Queue(Protocol):
    """What the simulator drives: the pd queue and both baselines."""

    def start(self) -> list[GateRun]: ...
    def finished(
        self, run_id: int, passed: bool, failed_tests: Iterable[str] = ()
    ) -> list[Decision]: ...


class Serial:
    """One branch per gate run, in order: K runs."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.todo = deque(ids)
        self.running: dict[int, tuple[str, ...]] = {}
        self.next_id = 1

    def start(self) -> list[GateRun]:
        if self.running or not self.todo:
            return []
        ids = (self.todo.popleft(),)
        self.running[self.next_id], self.next_id = ids, self.next_id + 1
        return [GateRun(self.next_id - 1, ids, None, RunKind.BATCH)]

    def finished(
        self, run_id: int, passed: bool, failed_tests: Iterable[str] = ()
    ) -> list[Decision]:
        ids = self.running.pop(run_id)
        return [Land(run_id, ids)] if passed else [Reject(ids[0], run_id, "")]


class Halving:
    """bors-style: all waiting branches in one batch; a failed batch splits in two
    halves that both run (the first half first); a failed single branch is rejected."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.todo: deque[tuple[str, ...]] = deque([tuple(ids)]) if ids else deque()
        self.running: dict[int, tuple[str, ...]] = {}
        self.next_id = 1

    def start(self) -> list[GateRun]:
        if self.running or not self.todo:
            return []
        ids = self.todo.popleft()
        self.running[self.next_id], self.next_id = ids, self.next_id + 1
        return [GateRun(self.next_id - 1, ids, None, RunKind.BATCH)]

    def finished(
        self, run_id: int, passed: bool, failed_tests: Iterable[str] = ()
    ) -> list[Decision]:
        ids = self.running.pop(run_id)
        if passed:
            return [Land(run_id, ids)]
        if len(ids) == 1:
            return [Reject(ids[0], run_id, "")]
        half = (len(ids) + 1) // 2
        self.todo.extendleft([ids[half:], ids[:half]])
        return []


@dataclass
class Stats:
    runs: int = 0
    wall: float = 0.0
    wrong: int = 0  # good branches rejected
    untested: int = 0  # lands onto a tree that was not tested and passed
    kinds: dict[str, int] = field(default_factory=dict)


def simulate(queue: Queue, broken: set[str], flake: float, rng: random.Random) -> Stats:
    """Drive ``queue`` to the end against the simulated gate; check every land."""
    stats, heap, now = Stats(), [], 0.0
    trees: dict[int, tuple[str, ...]] = {}
    passed: set[int] = set()
    target: tuple[str, ...] = ()
    while True:
        for run in queue.start():
            trees[run.run_id] = (target if run.base is None else trees[run.base]) + run.ids
            stats.runs += 1
            stats.kinds[run.kind.value] = stats.kinds.get(run.kind.value, 0) + 1
            failing = {f"test_{c}" for c in trees[run.run_id] if c in broken}
            failing |= {f"flaky_{c}" for c in run.ids if c not in broken and rng.random() < flake}
            heapq.heappush(heap, (now + rng.uniform(0.9, 1.1), run.run_id, frozenset(failing)))
        if not heap:
            return stats
        now, run_id, failing = heapq.heappop(heap)
        stats.wall = now
        passed.update([run_id] if not failing else [])
        for decision in queue.finished(run_id, not failing, failing):
            if isinstance(decision, Land):
                tree = trees[decision.run_id]
                if decision.run_id not in passed or tree != target + decision.ids:
                    stats.untested += 1
                target = tree
            elif isinstance(decision, Reject) and decision.id not in broken:
                stats.wrong += 1


Make = Callable[[Sequence[str]], Queue]


def pd_queue(parallel: int, retries: int) -> Make:
    return lambda ids: _filled(MergeQueue(parallel=parallel, retries=retries), ids)


def _filled(queue: MergeQueue, ids: Sequence[str]) -> MergeQueue:
    for cid in ids:
        queue.add(Candidate(cid))
    return queue


def many(make: Make, k: int, p: float, flake: float, seeds: int) -> list[Stats]:
    """The same ``seeds`` broken sets and gate timings for every queue compared."""
    out = []
    for seed in range(seeds):
        rng = random.Random(seed)
        ids = [f"b{i:02d}" for i in range(k)]
        broken = {c for c in ids if rng.random() < p}
        out.append(simulate(make(ids), broken, flake, random.Random(seed + 10_000)))
    return out


def mean(values: Iterable[float]) -> float:
    return statistics.fmean(values)


class RealGit:
    """A queue on a real repository: trees by ``git merge-tree``, gates on ``git
    archive`` of the run's commit, lands by compare-and-swap of ``refs/heads/main``."""

    def __init__(self, root: Path, k: int, broken: set[int]) -> None:
        self.repo = new_repo(root / "repo")
        self.root = root
        self.start_commit = run_git(self.repo, "rev-parse", "main")
        self.branches = {f"b{i:02d}": self.branch(i, i in broken) for i in range(k)}
        self.commits: dict[int, str] = {}
        self.passed_trees: set[str] = set()

    def branch(self, i: int, broken: bool) -> str:
        """A commit on the start adding one file (holding BROKEN if broken); plumbing only."""
        blob = run_git(
            self.repo, "hash-object", "-w", "--stdin", stdin=b"BROKEN\n" if broken else b"ok\n"
        )
        listing = run_git(self.repo, "ls-tree", self.start_commit)
        entries = f"{listing}\n100644 blob {blob}\tb{i:02d}.txt\n"
        tree = run_git(self.repo, "mktree", stdin=entries.encode())
        return run_git(self.repo, "commit-tree", tree, "-p", self.start_commit, "-m", f"b{i:02d}")

    def build(self, run: GateRun) -> str:
        """One commit for the run: the merged tree, parents the base and the branches."""
        base = (
            run_git(self.repo, "rev-parse", "main") if run.base is None else self.commits[run.base]
        )
        message = f"merge queue run {run.run_id}: {' '.join(run.ids)}"
        members = [Branch(cid, self.branches[cid]) for cid in run.ids]
        built = build(self.repo, base, members, message)  # the queue's own tree builder
        assert built.commit is not None and built.merged == list(run.ids)
        self.commits[run.run_id] = built.commit
        return self.commits[run.run_id]

    def gate(self, commit: str) -> bool:
        """The gate on the commit's files: no file may hold BROKEN."""
        work = Path(tempfile.mkdtemp(prefix="gate-", dir=self.root))
        archive = subprocess.run(
            ["git", "-C", str(self.repo), "archive", commit], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive.stdout, check=True)
        ok = subprocess.run(["sh", "-c", "! grep -rq BROKEN ."], cwd=work).returncode == 0
        if ok:
            self.passed_trees.add(run_git(self.repo, "rev-parse", f"{commit}^{{tree}}"))
        return ok

    def land(self, run_id: int) -> None:
        old = run_git(self.repo, "rev-parse", "main")
        run_git(self.repo, "update-ref", "refs/heads/main", self.commits[run_id], old)

    def history(self) -> tuple[int, int]:
        """Commits on main's first-parent history since the start, and how many of them
        are trees that were tested and passed."""
        listed = run_git(
            self.repo, "rev-list", "--first-parent", f"{self.start_commit}..main"
        ).split()
        trees = [run_git(self.repo, "rev-parse", f"{c}^{{tree}}") for c in listed]
        return len(listed), sum(t in self.passed_trees for t in trees)


def real_git(root: Path, k: int, parallel: int, seed: int) -> tuple[int, int, int, int, int]:
    """A real queue of ``k`` branches, results reported in a seeded random order."""
    rng = random.Random(seed)
    broken = {i for i in range(k) if rng.random() < 0.1} or {rng.randrange(k)}
    git = RealGit(root, k, broken)
    queue = _filled(MergeQueue(parallel=parallel, retries=1), list(git.branches))
    running: list[tuple[int, bool]] = []
    runs = landed = rejected = 0
    while True:
        for run in queue.start():
            runs += 1
            running.append((run.run_id, git.gate(git.build(run))))
        if not running:
            break
        run_id, ok = running.pop(rng.randrange(len(running)))
        for decision in queue.finished(run_id, ok, () if ok else {"grep"}):
            if isinstance(decision, Land):
                git.land(decision.run_id)
                landed += len(decision.ids)
            elif isinstance(decision, Reject):
                rejected += 1
            elif isinstance(decision, Cancel):
                running = [(r, o) for r, o in running if r != decision.run_id]
    commits, tested = git.history()
    return runs, landed, rejected, commits, tested


def row(label: str, value: float, goal: str = "") -> None:
    say(f"  {label:<52} {value:>8.3f}   {goal}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 queues per figure, not 3000")
    parser.add_argument("--seeds", type=int, help="queues per figure")
    args = parser.parse_args(argv)
    seeds = args.seeds or (300 if args.quick else 3000)
    k, p = 32, 0.1
    say(
        f"pd merge-queue bench ({'quick' if args.quick else 'full'}): "
        f"K={k}, p={p}, {seeds} queues per figure"
    )
    untested = 0

    say("\n1. one gate at a time: mean gate runs")
    row("bound K·H(p)", entropy_bound(k, p))
    for name, make in [("serial", Serial), ("bors-style halving", Halving)]:
        row(name, mean(s.runs for s in many(make, k, p, 0.0, seeds)))
    for retries, goal in [(0, "goal <= 16"), (1, "(goal <= 16 is for a trusted gate)")]:
        stats = many(pd_queue(1, retries), k, p, 0.0, seeds)
        untested += sum(s.untested for s in stats)
        row(f"pd queue, retries={retries}", mean(s.runs for s in stats), goal)

    say("\n2. 8 gates at once")
    for retries in (0, 1):
        stats = many(pd_queue(8, retries), k, p, 0.0, seeds)
        untested += sum(s.untested for s in stats)
        row(
            f"pd queue, retries={retries}: mean gate runs",
            mean(s.runs for s in stats),
            "goal <= 21" if retries == 0 else "(goal <= 21 is for a trusted gate; +1 per broken)",
        )
        row(
            f"pd queue, retries={retries}: mean wall (gate runs)",
            mean(s.wall for s in stats),
            "goal <= 4.5",
        )
        kinds = {
            kind: mean(s.kinds.get(kind, 0) for s in stats)
            for kind in ("batch", "bisect", "retry", "land")
        }
        say("    runs by kind: " + ", ".join(f"{kind} {n:.2f}" for kind, n in kinds.items()))

    say("\n3. flaky gate: 2% per good branch in a run, retries=1")
    for parallel in (1, 8):
        stats = many(pd_queue(parallel, 1), k, p, 0.02, seeds)
        untested += sum(s.untested for s in stats)
        row(
            f"good branches wrongly rejected per 32, {parallel} gate(s)",
            mean(s.wrong for s in stats),
            "goal <= 0.005",
        )
        row(f"mean gate runs, {parallel} gate(s)", mean(s.runs for s in stats))

    say("\n4. lands onto a tree not tested and passed (all queues above)")
    row("count", untested, "goal 0")

    say("\n5. real git: K=16, 2 gates, retries=1")
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        for seed in range(1 if args.quick else 3):
            runs, landed, rejected, commits, tested = real_git(Path(tmp) / str(seed), 16, 2, seed)
            say(
                f"  seed {seed}: {runs} gate runs, {landed} landed, {rejected} rejected; "
                f"main gained {commits} commits, {tested} of them tested trees that passed "
                f"(goal: all)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
