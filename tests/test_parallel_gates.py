"""Parallel gates in ``pd run`` (``gate.parallel``), decided in process: the run's steps
with two gates, fed the merger's answers one at a time. A batch stacked on another is
cancelled when the one below fails, and tested again on the real head; nothing lands
but by the merge queue's ``Land``, and only when the merger says the target moved."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

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
from tests.conftest import (
    finish_turn,
    hold_turn,
    pd,
    run_git,
    shared_dir,
    write_mission,
    write_turn,
)
from tests.test_e2e import events, run_dir, start_run, state, wait_for
from tests.test_e2e_faults import alive, commands_mentioning
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


def start(tasks: str) -> tuple[Run, dict[str, tuple[str, TaskJob]]]:
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
    started = [e for e in run.log if isinstance(e, ev.BatchStarted) and "c" in e.commits]
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


# ---- end to end: real pd run, real git, two gates held on files the test releases ------


def keyed_gate(shared: Path, clash: bool, release: str = "release-$key") -> str:
    """A gate script whose tree is named by the task files it holds ("a-b"): it leaves
    ``waiting-<key>`` when it starts, waits for ``release`` (per tree by default), then
    fails if a and b are both in the tree (``clash``: each passes alone) or a file says
    BROKEN."""
    script = shared / "gate.sh"
    hold = f"while [ ! -e '{shared}/{release}' ]; do sleep 0.02; done"
    script.write_text(
        "key=$(ls a.txt b.txt c.txt 2>/dev/null | sed 's/[.]txt$//' | paste -sd- -)\n"
        f"touch '{shared}/waiting-'$key\n"
        f'bash -c "{hold}"\n'
        + (
            "if [ -f a.txt ] && [ -f b.txt ]; then echo 'a and b clash'; exit 1; fi\n"
            if clash
            else ""
        )
        + "bash check.sh\n"
    )
    return f"bash {script}"


def first_parent_trees(project: Path, start: str) -> list[set[str]]:
    """The files of every commit on main's first-parent history since ``start``."""
    commits = run_git(project, "rev-list", "--first-parent", f"{start}..main").split()
    return [set(run_git(project, "ls-tree", "--name-only", c).split()) for c in commits]


@pytest.mark.slow
def test_two_gates_at_once_a_failure_ahead_sends_the_stacked_batch_to_the_real_head(
    project: Path, tmp_path: Path
) -> None:
    shared, rw = shared_dir(tmp_path)
    gate = keyed_gate(shared, clash=True)
    go_c = shared / "go-c"
    cassette = {t: [[write_turn(f"{t}.txt", f"{t}\n"), finish_turn()]] for t in "ab"}
    cassette["c"] = [[hold_turn(go_c), write_turn("c.txt", "c\n"), finish_turn()]]
    tasks = [{"id": t, "title": t} for t in "abc"]
    team = [{"role": "backend-dev", "count": 3}]
    mission = write_mission(
        tmp_path / "m",
        tasks,
        cassette,
        team=team,
        max_attempts=1,
        test_command=gate,
        sandbox=rw,
        gate={"parallel": 2},
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home)}
    checked = pd("validate", str(mission), "--repo", str(project), cwd=home, env=env)
    assert "2 gates at once (gate.parallel)" in checked.stdout, checked.stdout + checked.stderr
    start = run_git(project, "rev-parse", "main")
    proc = start_run(mission, project, home)

    def waiting(key: str) -> bool:
        return (shared / f"waiting-{key}").exists()

    def release(key: str) -> None:
        (shared / f"release-{key}").touch()

    # a and b each in a gate of their own, both held at once.
    wait_for(lambda: waiting("a") and waiting("b"), what="a's and b's gates held together")
    release("b")
    wait_for(lambda: any(e["kind"] == "task_merged" for e in events(home)), what="b lands")
    release("a")  # a passed on a head that is gone: tested again on the one with b
    wait_for(lambda: waiting("a-b"), what="a's gate on the head with b")
    go_c.touch()  # c arrives while a's landing run is in flight: it stacks on a's tree
    wait_for(lambda: waiting("a-b-c"), what="c's gate stacked on a's tree")
    assert not waiting("c") and not waiting("b-c")
    stacked = commands_mentioning(f"{shared}/release-a-b-c")
    assert stacked, "c's gate is running, held"
    release("a-b")  # a and b clash: the run below c fails, and c's gate is stopped
    wait_for(lambda: not any(alive(p) for p in stacked), what="the stacked gate killed")
    wait_for(lambda: waiting("b-c"), what="c tested again on the real head")
    release("b-c")
    output, _ = proc.communicate(timeout=300)

    assert proc.returncode == 1, output  # a failed: it clashes with b
    log = events(home)
    merged = [e["task"] for e in log if e["kind"] == "task_merged"]
    assert merged == ["b", "c"]  # each once
    assert [e["task"] for e in log if e["kind"] == "task_failed"] == ["a"]
    started = [e for e in log if e["kind"] == "batch_started"]
    a_runs = [e["batch"] for e in started if "a" in e["commits"]]
    c_on = [e["on"] for e in started if "c" in e["commits"]]
    assert c_on == [a_runs[1], 0]  # stacked on a's second run, then on the real head
    assert not (shared / "release-a-b-c").exists()  # the stacked gate never finished
    trees = first_parent_trees(project, start)
    assert trees and not any({"a.txt", "b.txt"} <= files for files in trees)
    assert {"b.txt", "c.txt"} <= trees[0]


@pytest.mark.slow
@pytest.mark.parametrize("killed", ["merger", "coordinator"])
def test_a_kill_with_two_gates_in_flight_loses_nothing_and_merges_nothing_twice(
    project: Path, tmp_path: Path, killed: str
) -> None:
    """The merger killed: a fresh one tests both batches again and the run goes on. The
    coordinator killed: the merger and its gates go with it, and ``pd resume`` ends it."""
    shared, rw = shared_dir(tmp_path)
    gate = keyed_gate(shared, clash=False, release="release")
    cassette = {t: [[write_turn(f"{t}.txt", f"{t}\n"), finish_turn()]] for t in "ab"}
    tasks = [{"id": t, "title": t} for t in "ab"]
    mission = write_mission(
        tmp_path / "m", tasks, cassette, test_command=gate, sandbox=rw, gate={"parallel": 2}
    )
    home = tmp_path / "home"
    home.mkdir()
    start = run_git(project, "rev-parse", "main")
    proc = start_run(mission, project, home)
    marks = [shared / "waiting-a", shared / "waiting-b"]
    wait_for(lambda: all(m.exists() for m in marks), what="two gates held at once")
    merger = wait_for(lambda: state(home).get("merger", {}).get("pid"), what="merger's pid")
    gates = commands_mentioning(f"{shared}/release")
    assert len(gates) >= 2
    for mark in marks:
        mark.unlink()
    if killed == "merger":
        os.kill(int(merger), signal.SIGKILL)
        wait_for(lambda: not any(alive(p) for p in gates), what="its gates gone with it")
        # A fresh merger tests both again (nothing lost), then both land, once each.
        wait_for(lambda: all(m.exists() for m in marks), what="both batches gated again")
        (shared / "release").touch()
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
        assert [e["kind"] for e in events(home)].count("merger_crashed") == 1
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(alive(p) for p in gates), what="the gates gone with it")
        assert run_git(project, "rev-parse", "main") == start  # nothing moved untested
        (shared / "release").touch()
        result = pd("resume", run_dir(home).name, cwd=home, env={"PD_HOME": str(home)})
        assert result.returncode == 0, result.stdout + result.stderr

    merged = [e["task"] for e in events(home) if e["kind"] == "task_merged"]
    assert sorted(merged) == ["a", "b"]
    trees = first_parent_trees(project, start)
    assert len(trees) == 2 and {"a.txt", "b.txt"} <= trees[0]  # one landing each
