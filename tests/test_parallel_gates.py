"""Parallel gates in ``pd run`` (``gate.parallel``), decided in process: the run's steps
with two gates, fed the merger's answers one at a time. A batch stacked on another is
cancelled when the one below fails, and tested again on the real head; nothing lands
but by the merge queue's ``Land``, and only when the merger says the target moved."""

from __future__ import annotations

from typing import Any

from orchestrator.engine.runstate import MERGER
from orchestrator.engine.steps.effects import Send
from orchestrator.engine.steps.inputs import Died, Received
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskState
from orchestrator.wire.messages import (
    BatchResult,
    CancelRun,
    LandRun,
    MergeBatch,
    Ready,
    RunLanded,
    TaskJob,
)
from tests.test_steps import Run


def to_merger(effects: list[Any]) -> list[Any]:
    return [e.message for e in effects if isinstance(e, Send) and e.worker == MERGER]


def batches(effects: list[Any]) -> dict[int, tuple[list[str], int]]:
    """run id -> (its tasks, the run it is stacked on) for every batch sent."""
    return {
        m.run_id: ([i["task_id"] for i in m.items], m.base_run)
        for m in to_merger(effects)
        if isinstance(m, MergeBatch)
    }


def gated(run: Run, run_id: int, passed: bool, tree: str = "") -> list[Any]:
    """The merger's answer for a gate with parallel gates: tested, never landed."""
    result = BatchResult(run_id, base="h0", gated=True, passed=passed, tree=tree)
    if not passed:
        result.reason = "tests failed"
    return run.feed(Received(MERGER, result))


def landed(run: Run, run_id: int, head: str) -> list[Any]:
    return run.feed(Received(MERGER, RunLanded(run_id, moved=True, head=head)))


def start(tasks: str) -> tuple[Run, dict[str, TaskJob]]:
    """A run with two gates and a worker per task, each busy with its task (the test
    says when each finishes)."""
    workers = [(f"w{n}", "backend-dev") for n in range(1, len(tasks) + 1)]
    run = Run([{"id": t, "title": t} for t in tasks], workers=workers, gates=2, max_attempts=1)
    run.boot()
    jobs = {j.task_id: (w, j) for w, j in run.jobs(run.tick()).items()}
    return run, {t: jobs[t] for t in tasks}


def test_a_batch_that_passes_lands_only_when_the_merger_says_the_target_moved() -> None:
    run, jobs = start("ab")
    sent = to_merger(run.done(*jobs["a"], commit="ca")) + to_merger(run.done(*jobs["b"], "cb"))
    assert [(m.run_id, m.base_run) for m in sent] == [(1, 0), (2, 0)]  # both on the head
    assert not any(m.land for m in sent)  # the merger tests; the queue decides the landing

    effects = gated(run, 2, True, tree="t2")
    assert to_merger(effects) == [LandRun(2)]  # the queue said Land: the merger is told
    assert run.state.graph.get("b").state is TaskState.MERGING  # not landed yet

    landed(run, 2, "t2")
    assert run.state.graph.get("b").state is TaskState.MERGED and run.state.head == "t2"
    # a passed on a head that is gone: tested again on the new head, never landed as is.
    effects = gated(run, 1, True, tree="t1")
    assert LandRun(1) not in to_merger(effects)
    assert batches(effects) == {3: (["a"], 0)}
    assert to_merger(gated(run, 3, True, tree="t3")) == [LandRun(3)]
    landed(run, 3, "t3")
    merged = [(e.task, e.head) for e in run.log if isinstance(e, ev.TaskMerged)]
    assert merged == [("b", "t2"), ("a", "t3")]


def test_a_failure_below_cancels_the_batch_stacked_on_it_which_is_tested_again() -> None:
    run, jobs = start("abc")
    run.done(*jobs["a"], commit="ca")
    run.done(*jobs["b"], commit="cb")
    gated(run, 2, True, tree="t2")
    landed(run, 2, "t2")
    effects = gated(run, 1, True, tree="t1")  # a passed on a stale head: LAND run 3
    assert batches(effects) == {3: (["a"], 0)}

    effects = run.done(*jobs["c"], commit="cc")
    assert batches(effects) == {4: (["c"], 3)}  # stacked on run 3's tree
    started = [e for e in run.log if isinstance(e, ev.MergeStarted) and e.task == "c"]
    assert [(e.batch, e.on) for e in started] == [(4, 3)]

    effects = gated(run, 3, False)  # a and b together fail: what is on it means nothing
    assert to_merger(effects)[0] == CancelRun(4)
    again = batches(effects)
    assert (["c"], 0) in again.values()  # c again, on the real head
    assert gated(run, 4, True, tree="t4") == []  # the cancelled gate's late answer: ignored

    c_run = next(r for r, (tasks, _) in again.items() if tasks == ["c"])
    assert to_merger(gated(run, c_run, True, tree="t5")) == [LandRun(c_run)]
    landed(run, c_run, "t5")
    assert run.state.graph.get("c").state is TaskState.MERGED
    merged = [e.task for e in run.log if isinstance(e, ev.TaskMerged)]
    assert merged == ["b", "c"]  # c once, and a never on the tree that failed


def test_a_merger_crash_with_two_gates_puts_both_batches_back_for_the_fresh_one() -> None:
    run, jobs = start("ab")
    run.done(*jobs["a"], commit="ca")
    run.done(*jobs["b"], commit="cb")
    gated(run, 1, True, tree="t1")  # LandRun 1 sent; the merger dies before answering

    effects = run.feed(Died(MERGER, -9))
    assert not to_merger(effects)
    effects = run.feed(Received(MERGER, Ready(MERGER, pid=3)))
    assert sorted(tasks for tasks, _ in batches(effects).values()) == [["a"], ["b"]]
    assert landed(run, 1, "t1") == []  # an answer from the dead merger: ignored
    assert run.state.graph.get("a").state is TaskState.MERGING


def test_a_target_moved_by_someone_else_restarts_the_queue_on_the_new_head() -> None:
    run, jobs = start("ab")
    run.done(*jobs["a"], commit="ca")
    run.done(*jobs["b"], commit="cb")
    gated(run, 1, True, tree="t1")

    moved = RunLanded(1, moved=False, reason="main moved since run 1 began")
    effects = run.feed(Received(MERGER, moved))
    assert CancelRun(2) in to_merger(effects)  # b's gate was on the old head
    assert sorted(tasks for tasks, _ in batches(effects).values()) == [["a"], ["b"]]
    (restarted,) = [e for e in run.log if isinstance(e, ev.MergeRestarted)]
    assert restarted.tasks == ["a", "b"]
    assert not [e for e in run.log if isinstance(e, ev.TaskMerged | ev.TaskRejected)]
