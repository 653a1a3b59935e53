"""The merge queue's decision core (orchestrator/gate): examples of each behaviour, the
batching math, and a hypothesis state machine that drives random queues (random broken
sets, flakes, drops, conflicts and completion order of parallel runs) and checks that
every tree the target moves to was tested and passed, the lands form a chain, and every
candidate ends exactly once."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator.gate import (
    Cancel,
    Candidate,
    Flaky,
    GateRun,
    Land,
    MergeQueue,
    Outcome,
    QueueMisuse,
    Reject,
    RunKind,
)
from orchestrator.gate.batching import batch_size, entropy_bound, failure_rate, split_size
from orchestrator.gate.runs import Trees


def queue_of(ids: str, **kwargs: object) -> MergeQueue:
    queue = MergeQueue(**kwargs)  # type: ignore[arg-type]
    for cid in ids:
        queue.add(Candidate(cid))
    return queue


def drain(queue: MergeQueue, broken: set[str]) -> list[object]:
    """Run a queue to the end, one run at a time, with a deterministic gate."""
    decisions: list[object] = []
    for _ in range(200):
        runs = queue.start()
        if not runs:
            break
        for run in runs:
            bad = bool(broken & set(run.ids))
            decisions += queue.finished(run.run_id, not bad, {"test_x"} if bad else ())
    return decisions


def test_a_good_batch_lands_as_one() -> None:
    queue = queue_of("abcd")
    (run,) = queue.start()
    assert (run.ids, run.base, run.kind) == (("a", "b", "c", "d"), None, RunKind.BATCH)
    assert queue.finished(run.run_id, True) == [Land(run.run_id, ("a", "b", "c", "d"))]
    assert queue.idle and queue.start() == []


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_a_broken_candidate_is_rejected_and_the_rest_of_its_batch_lands(retries: int) -> None:
    queue = queue_of("abcdef", retries=retries)
    decisions = drain(queue, broken={"d"})
    landed = [cid for d in decisions if isinstance(d, Land) for cid in d.ids]
    assert sorted(landed) == ["a", "b", "c", "e", "f"]
    assert [d.id for d in decisions if isinstance(d, Reject)] == ["d"]
    assert queue.outcome["d"] is Outcome.REJECTED


def test_a_candidate_is_rejected_only_after_failing_alone_retries_plus_one_times() -> None:
    queue = queue_of("a", retries=2)
    runs = []
    for _ in range(3):
        (run,) = queue.start()
        runs.append(run)
        decisions = queue.finished(run.run_id, False, {"test_x"})
    assert [r.ids for r in runs] == [("a",)] * 3
    assert [r.kind for r in runs] == [RunKind.BATCH, RunKind.RETRY, RunKind.RETRY]
    assert decisions == [
        Reject("a", runs[-1].run_id, "failed alone 3 times", frozenset({"test_x"}))
    ]


def test_a_flaky_failure_is_retried_failing_tests_first_and_reported() -> None:
    queue = queue_of("a")
    (first,) = queue.start()
    assert queue.finished(first.run_id, False, {"test_flaky"}) == []
    (again,) = queue.start()
    assert again.kind is RunKind.RETRY and again.run_first == {"test_flaky"}
    decisions = queue.finished(again.run_id, True)
    assert decisions == [Flaky(again.run_id, frozenset({"test_flaky"})), Land(again.run_id, ("a",))]


def test_a_passing_half_lands_and_the_other_half_is_split_without_a_run_of_its_own() -> None:
    queue = queue_of("abcdefgh", retries=0, prior_failure_rate=0.01, max_batch=8)
    (batch,) = queue.start()
    queue.finished(batch.run_id, False)
    (half,) = queue.start()
    assert half.kind is RunKind.BISECT and half.ids == ("a", "b", "c", "d")
    assert queue.finished(half.run_id, True) == [Land(half.run_id, half.ids)]
    (quarter,) = queue.start()
    assert quarter.ids == ("e", "f")  # not ("e", "f", "g", "h"): they hold the broken one


def stale_then_land(queue: MergeQueue) -> tuple[GateRun, GateRun]:
    """Two batches on the target; the second passes after the first landed, so it could
    not land: its candidates go in a LAND run, and new work stacks on that run."""
    first, second = queue.start()
    assert queue.finished(first.run_id, True) == [Land(first.run_id, first.ids)]
    assert queue.finished(second.run_id, True) == []
    queue.add(Candidate("e"))
    queue.add(Candidate("f"))
    land, stacked = queue.start()
    assert (land.kind, land.ids, land.base) == (RunKind.LAND, second.ids, None)
    assert (stacked.kind, stacked.ids, stacked.base) == (RunKind.BATCH, ("e", "f"), land.run_id)
    return land, stacked


def test_runs_stacked_on_a_failing_run_are_cancelled_and_replanned() -> None:
    queue = queue_of("abcd", parallel=2, prior_failure_rate=0.3)
    land, stacked = stale_then_land(queue)
    assert queue.finished(land.run_id, False, {"test_y"}) == [Cancel(stacked.run_id)]
    assert queue.finished(stacked.run_id, True) == []  # too late: ignored
    first, second = queue.start()  # c, d failed together: each runs alone, at once
    assert (first.kind, first.ids, second.ids) == (RunKind.BISECT, ("c",), ("d",))


def test_a_stacked_run_lands_right_after_its_base() -> None:
    queue = queue_of("abcd", parallel=2, prior_failure_rate=0.3)
    land, stacked = stale_then_land(queue)
    assert queue.finished(stacked.run_id, True) == []  # waits for its base
    decisions = queue.finished(land.run_id, True)
    assert decisions == [Land(land.run_id, land.ids), Land(stacked.run_id, ("e", "f"))]


def test_a_land_run_waits_for_every_run_that_could_still_clear_more() -> None:
    queue = queue_of("abcdef", parallel=3, prior_failure_rate=0.3)
    first, second, third = queue.start()
    queue.finished(first.run_id, True)
    queue.add(Candidate("g"))
    (fourth,) = queue.start()  # on the new target: it can land
    assert queue.finished(second.run_id, True) == []  # passed on a stale tree
    assert queue.start() == []  # a LAND of c, d now would need another for e, f
    assert queue.finished(fourth.run_id, True) == [Land(fourth.run_id, ("g",))]
    assert queue.start() == []  # the third run may still clear e, f
    assert queue.finished(third.run_id, True) == []
    (land,) = queue.start()
    assert (land.kind, land.ids, land.base) == (RunKind.LAND, second.ids + third.ids, None)


def test_a_land_run_does_not_wait_for_a_run_sure_to_fail() -> None:
    queue = queue_of("abcdef", parallel=3, retries=1, prior_failure_rate=0.3)
    first, second, third = queue.start()
    queue.finished(first.run_id, True)  # lands
    queue.finished(third.run_id, False, {"t"})
    e_alone, f_alone = queue.start()  # retries=1: each runs alone, at once
    queue.finished(f_alone.run_id, False, {"t"})
    (retry,) = queue.start()  # f failed alone once: retried
    assert (retry.kind, retry.ids) == (RunKind.RETRY, ("f",))
    queue.finished(second.run_id, True)  # on a stale tree: c, d wait to land
    assert queue.start() == []  # e may still pass and wait too
    assert queue.finished(e_alone.run_id, True) == [Land(e_alone.run_id, ("e",))]
    (land,) = queue.start()  # f's retry holds all that is left of its group: sure to fail
    assert (land.kind, land.ids) == (RunKind.LAND, ("c", "d"))


def test_idle_gates_split_a_failed_group_several_ways_at_once() -> None:
    queue = queue_of("abcdefghijklmnop", parallel=4, retries=0)
    batches = queue.start()
    assert [len(b.ids) for b in batches] == [4, 4, 4, 4]  # spread over the free gates
    for batch in batches[1:]:
        queue.finished(batch.run_id, True)  # one lands, two wait to land
    queue.finished(batches[0].run_id, False, {"t"})
    land, *parts = queue.start()
    assert land.kind is RunKind.LAND
    # one gate would halve a, b, c, d; three idle ones split it in three at once
    assert [(p.kind, p.ids, p.base) for p in parts] == [
        (RunKind.BISECT, ids, land.run_id) for ids in [("a",), ("b",), ("c", "d")]
    ]


def test_leftovers_go_together_once_runs_are_in_flight() -> None:
    queue = queue_of("abcdef", parallel=3, prior_failure_rate=0.01)
    first, second, _third = queue.start()
    assert [first.ids, second.ids] == [("a", "b"), ("c", "d")]  # spread: nothing ran yet
    for cid in "ghij":
        queue.add(Candidate(cid))
    queue.finished(first.run_id, True)
    queue.finished(second.run_id, True)
    (batch,) = queue.start()  # two gates free, but the bisection may need them soon
    assert (batch.kind, batch.ids) == (RunKind.BATCH, ("g", "h", "i", "j"))


def test_a_conflicted_candidate_leaves_and_the_run_is_replanned() -> None:
    queue = queue_of("abc")
    (run,) = queue.start()
    assert queue.conflicted(run.run_id, "b") == [Cancel(run.run_id)]
    (again,) = queue.start()
    assert again.ids == ("a", "c")
    assert queue.finished(again.run_id, True) == [Land(again.run_id, ("a", "c"))]
    assert queue.outcome == {"b": Outcome.CONFLICTED, "a": Outcome.LANDED, "c": Outcome.LANDED}


def test_a_dropped_candidate_cancels_its_run() -> None:
    queue = queue_of("ab")
    (run,) = queue.start()
    assert queue.drop("a") == [Cancel(run.run_id)]
    assert queue.drop("a") == []
    assert [r.ids for r in queue.start()] == [("b",)]


def test_higher_priority_goes_first_then_arrival_order() -> None:
    queue = MergeQueue(max_batch=1)
    for cid, priority in [("low", 1), ("high", 5), ("mid", 3), ("high2", 5)]:
        queue.add(Candidate(cid, priority))
    order = []
    while runs := queue.start():
        order += runs[0].ids
        queue.finished(runs[0].run_id, True)
    assert order == ["high", "high2", "mid", "low"]


def test_a_tree_is_named_by_its_candidates_in_order_however_it_was_stacked() -> None:
    trees = Trees()
    ab = trees.extend(Trees.EMPTY, ("a", "b"))
    assert trees.extend(trees.extend(Trees.EMPTY, ("a",)), ("b",)) == ab
    assert trees.extend(Trees.EMPTY, ("b", "a")) != ab
    assert trees.extend(ab, ("c",)) not in (ab, Trees.EMPTY)


def test_a_long_queue_keeps_what_its_runs_added_not_every_tree_whole() -> None:
    """Each run's tree was a tuple of every candidate landed before it: a long queue's
    memory (and its time hashing them) grew with the square of what it had landed."""
    queue = queue_of([f"c{i}" for i in range(3000)], max_batch=16)  # type: ignore[arg-type]
    landed = drain(queue, broken=set())
    assert sum(len(d.ids) for d in landed if isinstance(d, Land)) == 3000 and queue.idle
    assert len(queue._stack.trees._next) == 3000  # one step per candidate run, in all


def test_the_driver_misusing_the_queue_is_told_so() -> None:
    queue = queue_of("a")
    (run,) = queue.start()
    with pytest.raises(QueueMisuse, match="unknown run 99"):
        queue.finished(99, True)
    queue.finished(run.run_id, True)
    with pytest.raises(QueueMisuse, match="already reported"):
        queue.finished(run.run_id, True)
    with pytest.raises(QueueMisuse, match="already added"):
        queue.add(Candidate("a"))
    with pytest.raises(QueueMisuse, match="unknown candidate"):
        queue.drop("zz")


def test_batch_sizes_follow_the_failure_rate() -> None:
    assert batch_size(0.1, 32) == 7  # (0.9)^7 = 0.48: a fair coin
    assert batch_size(0.02, 32) == 32  # capped
    assert batch_size(0.4, 32) == 1  # above Ungar's (3 - sqrt 5)/2: one by one
    assert split_size(8, 0.01) == 4 and split_size(2, 0.5) == 1
    assert entropy_bound(32, 0.1) == pytest.approx(15.0, abs=0.05)
    assert failure_rate(0.1, broken=0, good=0) == pytest.approx(0.1)
    assert failure_rate(0.1, broken=10, good=0) > 0.5 > failure_rate(0.1, broken=0, good=10)


def test_the_queue_tests_singly_once_most_candidates_fail() -> None:
    queue = queue_of("abcdefghij", retries=0)
    drain(queue, broken=set("abcdefgh"))
    (run,) = queue_of_same_rate(queue).start()
    assert len(run.ids) == 1


def queue_of_same_rate(queue: MergeQueue) -> MergeQueue:
    """More candidates into a queue that has learnt its failure rate."""
    for cid in "klmn":
        queue.add(Candidate(cid))
    return queue


@st.composite
def candidate_specs(draw: st.DrawFn) -> tuple[float, bool]:
    return draw(st.sampled_from([0.0, 1.0, 2.0])), draw(st.booleans())


class QueueMachine(RuleBasedStateMachine):
    """A driver that keeps its own record of trees and checks every decision."""

    @initialize(
        parallel=st.integers(1, 4),
        retries=st.integers(0, 2),
        prior=st.sampled_from([0.05, 0.2, 0.5]),
        flaky=st.booleans(),
    )
    def setup(self, parallel: int, retries: int, prior: float, flaky: bool) -> None:
        self.queue = MergeQueue(parallel=parallel, retries=retries, prior_failure_rate=prior)
        self.retries, self.flaky = retries, flaky
        self.broken: set[str] = set()
        self.runs: dict[int, GateRun] = {}
        self.trees: dict[int, tuple[str, ...]] = {}  # run -> its tree
        self.open_runs: list[int] = []
        self.target: tuple[str, ...] = ()
        self.last_land: int | None = None
        self.start_target: dict[int, int | None] = {}
        self.passed: set[int] = set()
        self.ended: dict[str, str] = {}
        self.alone_failures: dict[str, int] = {}
        self.flaked = False

    @rule(spec=candidate_specs())
    def add(self, spec: tuple[float, bool]) -> None:
        cid = f"c{len(self.queue._candidates)}"
        self.queue.add(Candidate(cid, spec[0]))
        if spec[1]:
            self.broken.add(cid)

    @rule()
    def start(self) -> None:
        for run in self.queue.start():
            busy = {c for r in self.open_runs for c in self.runs[r].ids}
            assert not busy & set(run.ids), "a candidate is in one run at a time"
            assert not set(run.ids) & self.ended.keys(), "an ended candidate runs again"
            assert run.base is None or run.base in self.open_runs
            below = self.target if run.base is None else self.trees[run.base]
            self.runs[run.run_id] = run
            self.trees[run.run_id] = below + run.ids
            self.start_target[run.run_id] = self.last_land
            self.open_runs.append(run.run_id)

    @rule(pick=st.integers(0, 99), flake=st.integers(0, 9))
    def finish(self, pick: int, flake: int) -> None:
        if not self.open_runs:
            return
        run_id = self.open_runs.pop(pick % len(self.open_runs))
        tree = self.trees[run_id]
        flakes = self.flaky and flake == 0
        passed = not (self.broken & set(tree)) and not flakes
        self.flaked |= flakes and not self.broken & set(tree)
        ids = self.runs[run_id].ids
        if not passed and len(ids) == 1 and not self.broken & (set(tree) - set(ids)):
            self.alone_failures[ids[0]] = self.alone_failures.get(ids[0], 0) + 1
        if passed:
            self.passed.add(run_id)
        self.apply(self.queue.finished(run_id, passed, {"t_flaky" if flakes else "t_real"}))

    @rule(pick=st.integers(0, 99))
    def drop(self, pick: int) -> None:
        open_ids = self.queue.open()
        if open_ids:
            cid = open_ids[pick % len(open_ids)]
            self.apply(self.queue.drop(cid))
            self.end(cid, "dropped")

    @rule(pick=st.integers(0, 99))
    def conflict(self, pick: int) -> None:
        if self.open_runs:
            run_id = self.open_runs[pick % len(self.open_runs)]
            cid = self.runs[run_id].ids[pick % len(self.runs[run_id].ids)]
            self.apply(self.queue.conflicted(run_id, cid))
            self.end(cid, "conflicted")

    def apply(self, decisions: list[object]) -> None:
        for decision in decisions:
            if isinstance(decision, Land):
                self.land(decision)
            elif isinstance(decision, Reject):
                self.reject(decision)
            elif isinstance(decision, Cancel):
                if decision.run_id in self.open_runs:
                    self.open_runs.remove(decision.run_id)
            else:
                assert isinstance(decision, Flaky) and decision.tests == {"t_flaky"}

    def land(self, decision: Land) -> None:
        run = self.runs[decision.run_id]
        assert decision.run_id in self.passed, "only a tree that passed lands"
        on = run.base if run.base is not None else self.start_target[decision.run_id]
        assert on == self.last_land, "each land stacks on the previous one"
        assert self.trees[decision.run_id] == self.target + run.ids
        assert decision.ids == run.ids
        self.target, self.last_land = self.trees[decision.run_id], decision.run_id
        for cid in decision.ids:
            self.end(cid, "landed")

    def reject(self, decision: Reject) -> None:
        if self.retries:
            assert self.alone_failures.get(decision.id, 0) >= self.retries + 1
        if not self.flaked:
            assert decision.id in self.broken, "a deterministic gate rejects no good one"
        self.end(decision.id, "rejected")

    def end(self, cid: str, how: str) -> None:
        assert cid not in self.ended, f"{cid} ended twice: {self.ended.get(cid)}, {how}"
        self.ended[cid] = how

    @invariant()
    def outcomes_agree(self) -> None:
        if hasattr(self, "queue"):
            assert {c: o.value for c, o in self.queue.outcome.items()} == self.ended

    def teardown(self) -> None:
        """Finish the queue with no more flakes: every candidate ends, exactly once."""
        if not hasattr(self, "queue"):
            return
        self.flaky = False
        for _ in range(1000):
            self.start()
            if not self.open_runs:
                break
            self.finish(0, 1)
        assert self.queue.idle and not self.open_runs
        assert set(self.ended) == set(self.queue._candidates)


QueueMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase


def test_the_bound_is_the_entropy() -> None:
    assert entropy_bound(1, 0.5) == 1.0 and math.isclose(entropy_bound(10, 0.0), 0.0)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("parallel", 0), ("retries", -1), ("max_batch", 0), ("prior_failure_rate", 1.0)],
)
def test_a_bad_setting_is_named(setting: str, value: float) -> None:
    with pytest.raises(QueueMisuse, match=f"{setting}={value}"):
        MergeQueue(**{setting: value})  # type: ignore[arg-type]
