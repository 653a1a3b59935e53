"""The coordinator's decisions, in process: a ``RunState`` built in memory, inputs fed to
``steps.step``, and the effects it returns read back. No process, pipe or git: these
tests drive the same code a live run does, one input at a time."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.engine import steps
from orchestrator.engine.mergequeue import InFlight
from orchestrator.engine.runstate import MERGER, RunRules, RunState, RunStatus, SlotJob, SlotState
from orchestrator.engine.steps.effects import Answer, Emit, Kill, Respawn, Retire, Send
from orchestrator.engine.steps.inputs import Control, Died, Received, Tick
from orchestrator.record import events as ev
from orchestrator.record.control import ControlRequest
from orchestrator.spec.mission import Mission
from orchestrator.tasks.taskgraph import TaskGraph, TaskState
from orchestrator.team.roles import load_roles
from orchestrator.wire.messages import (
    AbortTask,
    BatchResult,
    HandedOff,
    HandOff,
    MergeBatch,
    Ready,
    ReviewDone,
    ReviewJob,
    TaskDone,
    TaskFailed,
    TaskJob,
)

ROLES = load_roles()


class Run:
    """A run state and a clock, with the inputs a live run would see."""

    def __init__(
        self,
        tasks: list[dict[str, Any]],
        workers: list[tuple[str, str]] | None = None,
        escalation: bool = False,
        notes: dict[tuple[str, int], str] | None = None,
        gates: int = 1,
        **mission: Any,
    ) -> None:
        workers = workers or [("w1", "backend-dev"), ("w2", "backend-dev")]
        team = [{"role": role, "count": 1} for _, role in workers]
        spec = Mission.model_validate({"name": "m", "team": team, "tasks": tasks, **mission})
        rules = RunRules(
            run_id="r1",
            mission=spec,
            roles=ROLES,
            workers=workers,
            gate_command="pytest",
            escalation=escalation,
            gate_parallel=gates,
            running_note=lambda task, attempt: (notes or {}).get((task, attempt), ""),
        )
        self.state = RunState(rules, TaskGraph.for_mission(spec, spec.tasks), head="h0")
        self.now = 0.0
        self.log: list[ev.Event] = []

    def feed(self, event: Any) -> list[Any]:
        self.now += 1.0
        effects = steps.step(self.state, event, self.now)
        self.log += [e.event for e in effects if isinstance(e, Emit)]
        return list(effects)

    def boot(self) -> None:
        self.feed(Received(MERGER, Ready(MERGER, pid=1)))
        for slot in list(self.state.slots):
            self.feed(Received(slot, Ready(slot, pid=2)))

    def tick(self, **kw: Any) -> list[Any]:
        return self.feed(Tick(**kw))

    def jobs(self, effects: list[Any]) -> dict[str, Any]:
        """What each worker was sent, by worker."""
        return {e.worker: e.message for e in effects if isinstance(e, Send)}

    def done(self, worker: str, job: TaskJob, commit: str = "c1") -> list[Any]:
        ids = dict(worker_id=worker, task_id=job.task_id, attempt=job.attempt)
        return self.feed(
            Received(worker, TaskDone(**ids, branch=job.branch, commit=commit, summary="ok"))
        )

    def gated(self, passed: bool, head: str = "", **result: Any) -> list[Any]:
        """The merger's verdict on the batch it has."""
        current = self.state.merges.current
        assert current is not None, "no batch at the merger"
        verdict = BatchResult(current.run_id, gated=True, passed=passed, head=head, **result)
        return self.feed(Received(MERGER, verdict))

    def merged(self, task: str, head: str) -> list[Any]:
        assert self.state.merges.current and task in self.state.merges.current.tasks()
        return self.gated(True, head)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.log]


def batch(effects: list[Any]) -> list[str]:
    """The tasks of the batch sent to the merger."""
    sent = [e.message for e in effects if isinstance(e, Send) and e.worker == MERGER]
    assert len(sent) == 1 and isinstance(sent[0], MergeBatch)
    return [item["task_id"] for item in sent[0].items]


def test_ready_tasks_go_to_idle_workers_and_the_job_follows_its_record() -> None:
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B", "deps": ["a"]}])
    assert run.tick() == []  # nobody is ready yet
    run.boot()
    effects = run.tick()

    jobs = run.jobs(effects)
    assert list(jobs) == ["w1"] and isinstance(jobs["w1"], TaskJob)
    assert jobs["w1"].task_id == "a" and jobs["w1"].target_head == "h0"
    # The assignment is recorded before the job is sent.
    kinds = [type(e).__name__ for e in effects]
    assert kinds.index("Emit") < kinds.index("Send")
    assert run.state.slots["w1"].state is SlotState.BUSY
    assert run.state.graph.get("a").state is TaskState.RUNNING


def test_a_finished_task_is_merged_and_its_dependent_starts_on_the_new_head() -> None:
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B", "deps": ["a"]}])
    run.boot()
    job = run.jobs(run.tick())["w1"]

    effects = run.done("w1", job)
    (item,) = run.jobs(effects)[MERGER].items
    assert (item["task_id"], item["commit"]) == ("a", "c1")
    assert not steps.finished(run.state)

    run.merged("a", "h1")
    assert run.state.head == "h1" and run.state.session == ["a: A — ok"]
    nxt = run.jobs(run.tick())
    assert [(j.task_id, j.target_head) for j in nxt.values()] == [("b", "h1")]
    run.done(next(iter(nxt)), next(iter(nxt.values())), "c2")
    run.merged("b", "h2")

    assert steps.finished(run.state)
    assert steps.outcome(run.state) == (0, "finished")
    assert run.kinds().count("task_merged") == 2


def test_review_goes_to_a_reviewer_that_is_not_the_implementer_and_approval_merges() -> None:
    workers = [("w1", "backend-dev"), ("w2", "code-reviewer"), ("w3", "backend-dev")]
    run = Run([{"id": "a", "title": "A"}], workers=workers, review=True)
    run.boot()
    job = run.jobs(run.tick())["w1"]
    run.done("w1", job)
    assert run.state.graph.get("a").state is TaskState.REVIEWING

    reviews = run.jobs(run.tick())
    assert list(reviews) == ["w2"] and isinstance(reviews["w2"], ReviewJob)
    assert reviews["w2"].base == "h0" and reviews["w2"].commit == "c1"
    assert run.state.slots["w2"].job is SlotJob.REVIEW

    verdict = ReviewDone("w2", "a", reviews["w2"].attempt, approved=True, comments="good")
    effects = run.feed(Received("w2", verdict))
    assert batch(effects) == ["a"]
    assert run.state.slots["w2"].state is SlotState.IDLE


def test_a_reviewer_that_dies_hands_the_review_to_another_one() -> None:
    workers = [("w1", "backend-dev"), ("w2", "code-reviewer"), ("w3", "code-reviewer")]
    run = Run([{"id": "a", "title": "A"}], workers=workers, review=True)
    run.boot()
    run.done("w1", run.jobs(run.tick())["w1"])
    assert list(run.jobs(run.tick())) == ["w2"]

    effects = run.feed(Died("w2", -9))
    assert Respawn("w2") in effects
    assert run.state.review_tried == {"a": {"w2"}}
    assert list(run.jobs(run.tick())) == ["w3"]  # w2 is booting; w3 has not failed it


def test_two_review_send_backs_and_a_failure_do_not_escalate_the_next_attempt() -> None:
    workers = [("w1", "backend-dev"), ("w2", "code-reviewer")]
    run = Run(
        [{"id": "a", "title": "A"}],
        workers=workers,
        review=True,
        max_review_rounds=3,
        escalation=True,
    )
    run.boot()
    for round_ in (1, 2):
        job = run.jobs(run.tick())["w1"]
        run.done("w1", job, f"c{round_}")
        review = run.jobs(run.tick())["w2"]
        run.feed(Received("w2", ReviewDone("w2", "a", review.attempt, False, "redo")))
    job = run.jobs(run.tick())["w1"]
    run.feed(Received("w1", TaskFailed("w1", "a", job.attempt, "tests fail")))

    job = run.jobs(run.tick())["w1"]
    assert job.attempt == 4 and not job.escalate  # one failure is not two
    run.feed(Received("w1", TaskFailed("w1", "a", job.attempt, "tests fail again")))
    job = run.jobs(run.tick())["w1"]
    assert job.escalate  # the attempt after the second failure takes the strong model
    assigned = [e for e in run.log if isinstance(e, ev.TaskAssigned)]
    assert [e.escalated for e in assigned] == [False] * 4 + [True]


def test_a_handoff_request_reaches_the_worker_and_the_next_attempt_starts_from_it() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.boot()
    job = run.jobs(run.tick())["w1"]

    effects = run.feed(Control(ControlRequest("handoff", worker="w1")))
    assert run.jobs(effects) == {"w1": HandOff(task_id="a")}
    assert Answer(ControlRequest("handoff", worker="w1"), None) in effects

    handed = HandedOff("w1", "a", job.attempt, start_from="wip1", handoff="half done")
    effects = run.feed(Received("w1", handed))
    assert Respawn("w1") in effects  # a fresh process in the same slot
    assert run.state.slots["w1"].state is SlotState.BOOTING
    nxt = run.jobs(run.tick())["w2"]
    assert (nxt.start_from, nxt.handoff, nxt.attempt) == ("wip1", "half done", 2)
    assert not nxt.escalate


def test_a_crashed_worker_fails_its_attempt_with_its_note_and_is_respawned() -> None:
    run = Run([{"id": "a", "title": "A"}], notes={("a", 1): "got as far as X"})
    run.boot()
    run.tick()

    effects = run.feed(Died("w1", -9))
    failed = [e for e in run.log if isinstance(e, ev.AttemptFailed)]
    assert [(f.task, f.handoff) for f in failed] == [("a", "got as far as X")]
    assert "died (exit code -9)" in failed[0].reason
    assert Respawn("w1") in effects
    assert run.state.graph.get("a").state is TaskState.PENDING


def test_a_worker_that_crashes_too_often_is_retired_and_the_run_stalls() -> None:
    run = Run([{"id": "a", "title": "A"}], workers=[("w1", "backend-dev")])
    run.boot()
    for _ in range(6):
        effects = run.feed(Died("w1", 1))
    assert Retire("w1") in effects
    assert run.state.slots["w1"].state is SlotState.RETIRED
    assert steps.finished(run.state)
    out = steps.wind_down(run.state)
    assert [type(e.event) for e in out] == [ev.RunStalled]
    assert steps.outcome(run.state) == (1, "failed")


def test_a_task_no_worker_can_take_stalls_the_run_at_once() -> None:
    run = Run([{"id": "a", "title": "A", "role": "designer"}], workers=[("w1", "backend-dev")])
    run.boot()
    assert run.tick() == []
    assert steps.finished(run.state)


def test_silent_workers_are_killed_but_the_merger_is_left_to_its_gate() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.boot()
    effects = run.tick(silent=["w2", MERGER], silence=30.0)
    assert Kill("w2") in effects and Kill(MERGER) not in effects
    assert [e.worker for e in run.log if isinstance(e, ev.HeartbeatMissed)] == ["w2"]


def test_aborting_a_task_tells_its_worker_and_drops_its_merge() -> None:
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
    run.boot()
    jobs = run.jobs(run.tick())
    run.done("w2", jobs["w2"])  # b goes to the merger; a is still running

    effects = run.feed(Control(ControlRequest("abort", task="a")))
    assert run.jobs(effects) == {"w1": AbortTask(task_id="a")}
    assert run.state.graph.get("a").state is TaskState.ABORTED
    # Its answer comes back later and is not merged.
    effects = run.done("w1", jobs["w1"])
    assert MERGER not in run.jobs(effects)


def test_a_task_aborted_while_its_batch_is_gated_leaves_once_the_batch_fails() -> None:
    tasks = [{"id": t, "title": t.upper()} for t in "abc"]
    run = Run(tasks, workers=[("w1", "backend-dev"), ("w2", "backend-dev"), ("w3", "backend-dev")])
    run.boot()
    jobs = run.jobs(run.tick())
    assert batch(run.done("w3", jobs["w3"], commit="cc")) == ["c"]
    run.done("w1", jobs["w1"], commit="ca")
    run.done("w2", jobs["w2"], commit="cb")  # a and b wait for c's batch
    assert batch(run.merged("c", "h1")) == ["a", "b"]

    run.feed(Control(ControlRequest("abort", task="a")))  # the merger has it: it stays
    assert "a" in run.state.merges.key_of
    effects = run.gated(False)  # the batch failed: a leaves, b alone is tried again
    assert "a" not in run.state.merges.key_of and batch(effects) == ["b"]
    assert run.state.graph.get("a").state is TaskState.ABORTED


def test_aborting_the_run_stops_new_work_and_ends_it_as_aborted() -> None:
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B", "deps": ["a"]}])
    run.boot()
    run.tick()
    run.feed(Control(ControlRequest("abort")))
    assert run.state.status is RunStatus.ABORTING and steps.finished(run.state)
    assert run.jobs(run.tick()) == {}

    out = steps.wind_down(run.state)
    (aborted,) = [e.event for e in out]
    assert isinstance(aborted, ev.RunAborted) and aborted.tasks == ["a", "b"]
    assert steps.outcome(run.state) == (130, "aborted")


def test_a_limit_stops_new_work_but_lets_running_work_finish() -> None:
    run = Run(
        [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}], workers=[("w1", "backend-dev")]
    )
    run.boot()
    job = run.jobs(run.tick())["w1"]
    assert run.tick(halted="budget exhausted: $1.00 of $1.00") == []
    assert run.state.status is RunStatus.STOPPING and not steps.finished(run.state)

    run.done("w1", job)  # what runs still merges
    run.merged(job.task_id, "h1")
    assert run.jobs(run.tick()) == {} and steps.finished(run.state)
    (stopped,) = [e.event for e in steps.wind_down(run.state)]
    assert isinstance(stopped, ev.RunStopped) and stopped.tasks == ["b"]
    assert steps.outcome(run.state) == (1, "budget exhausted")


def test_a_merger_that_fails_to_start_breaks_the_run() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.feed(Received(MERGER, Ready(MERGER, pid=1, error="no git")))
    assert run.state.aborting and run.state.reason == "merger failed to start: no git"


def test_a_merger_crash_puts_its_merge_back_in_front_for_the_fresh_one() -> None:
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])
    run.boot()
    jobs = run.jobs(run.tick())
    run.done("w1", jobs["w1"], "ca")
    run.done("w2", jobs["w2"], "cb")

    assert run.state.merges.view()["batch"] == ["a"]  # b finished while a was merged
    effects = run.feed(Died(MERGER, -9))
    assert Respawn(MERGER) in effects and run.state.merges.view()["queue"] == ["a", "b"]
    effects = run.feed(Received(MERGER, Ready(MERGER, pid=3)))
    assert batch(effects) == ["a", "b"]  # a first, and b with it in one batch


def test_a_rejected_merge_is_a_failed_attempt_with_the_gate_output() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.boot()
    job = run.jobs(run.tick())["w1"]
    run.done("w1", job)
    failed = {"reason": "tests failed", "log_tail": "E assert 1 == 2"}
    again = run.gated(False, **failed)
    assert batch(again) == ["a"]  # failed alone once: run again (a flaky test?)
    assert run.state.graph.get("a").state is TaskState.MERGING
    run.gated(False, **failed)  # and failed again: back to its agent

    assert run.state.graph.get("a").state is TaskState.PENDING
    nxt = run.jobs(run.tick())
    (retry,) = nxt.values()
    assert any("E assert 1 == 2" in f for f in retry.feedback)


@pytest.mark.parametrize("infrastructure", [True, False])
def test_only_the_agents_own_failures_count_as_attempts(infrastructure: bool) -> None:
    run = Run([{"id": "a", "title": "A"}], max_attempts=1)
    run.boot()
    job = run.jobs(run.tick())["w1"]
    failed = TaskFailed(
        "w1", "a", job.attempt, "git worktree add failed", infrastructure=infrastructure
    )
    run.feed(Received("w1", failed))
    state = run.state.graph.get("a").state
    assert state is (TaskState.PENDING if infrastructure else TaskState.FAILED)


def test_a_refused_control_request_is_answered_with_the_reason() -> None:
    run = Run([{"id": "a", "title": "A"}])
    effects = run.feed(Control(ControlRequest("abort", task="nope")))
    (answer,) = [e for e in effects if isinstance(e, Answer)]
    assert answer.problem == "no task 'nope' in this run"
    assert run.state.status is RunStatus.RUNNING


def test_finished_work_merges_critical_path_first_then_first_finished() -> None:
    tasks = [
        {"id": "x", "title": "X"},
        {"id": "a", "title": "A"},
        {"id": "b", "title": "B"},
        {"id": "c", "title": "C", "deps": ["b"]},  # b heads a chain of two
    ]
    workers = [("w1", "backend-dev"), ("w2", "backend-dev"), ("w3", "backend-dev")]
    run = Run(tasks, workers=workers)
    run.boot()
    jobs = {j.task_id: (w, j) for w, j in run.jobs(run.tick()).items()}
    assert set(jobs) == {"x", "a", "b"}

    first = run.done(*jobs["x"])  # the merger takes x at once
    assert batch(first) == ["x"]
    run.done(*jobs["a"])
    run.done(*jobs["b"])  # finished after a, but c waits for it
    assert run.state.merges.view()["queue"] == ["b", "a"]
    effects = run.merged("x", "h1")
    assert batch(effects) == ["b", "a"]  # one batch, b first


def drain_merges(run: Run, broken: set[str]) -> list[list[str]]:
    """Answer every batch the merger gets as a deterministic gate would: it passes unless
    it holds a broken task. Returns the batches, in order."""
    seen: list[list[str]] = []
    while run.state.merges.current is not None:
        tasks = run.state.merges.current.tasks()
        seen.append(tasks)
        passed = not broken & set(tasks)
        run.gated(passed, head=f"h{len(seen)}" if passed else "", reason="tests failed")
    return seen


def finish_together(run: Run, tasks: list[str]) -> InFlight:
    """``tasks`` all finish while the merger is busy; then it takes them, one batch."""
    run.state.merges.merger_ready = False
    jobs = {j.task_id: (w, j) for w, j in run.jobs(run.tick()).items()}
    assert set(jobs) == set(tasks)
    for task in tasks:
        run.done(*jobs[task], commit=f"c-{task}")
    run.state.merges.merger_ready = True
    run.feed(Received(MERGER, Ready(MERGER, pid=3)))
    current = run.state.merges.current
    assert current is not None and current.tasks() == tasks
    return current


def test_finished_work_lands_in_one_batch_when_it_passes() -> None:
    workers = [(f"w{n}", "backend-dev") for n in range(1, 5)]
    tasks = [{"id": t, "title": t} for t in "abcd"]
    run = Run(tasks, workers=workers)
    run.boot()
    finish_together(run, list("abcd"))

    assert drain_merges(run, broken=set()) == [["a", "b", "c", "d"]]
    merged = [e for e in run.log if isinstance(e, ev.TaskMerged)]
    assert {e.task for e in merged} == set("abcd") and {e.head for e in merged} == {"h1"}
    assert steps.finished(run.state) and steps.outcome(run.state) == (0, "finished")


def test_a_failing_batch_is_split_and_only_the_broken_task_goes_back() -> None:
    workers = [(f"w{n}", "backend-dev") for n in range(1, 5)]
    run = Run([{"id": t, "title": t} for t in "abcd"], workers=workers, max_attempts=1)
    run.boot()
    finish_together(run, list("abcd"))

    batches = drain_merges(run, broken={"c"})

    assert batches[0] == ["a", "b", "c", "d"] and len(batches) < 4 + 2 * 2
    assert [b for b in batches if b == ["c"]] == [["c"], ["c"]]  # alone, and once again
    states = {t.id: t.state for t in run.state.graph}
    assert states == {
        "a": TaskState.MERGED,
        "b": TaskState.MERGED,
        "c": TaskState.FAILED,
        "d": TaskState.MERGED,
    }
    (rejected,) = [e for e in run.log if isinstance(e, ev.TaskRejected)]
    assert rejected.task == "c" and rejected.reason == "tests failed"


def test_a_task_that_conflicts_leaves_the_batch_and_the_rest_is_tried_again() -> None:
    workers = [("w1", "backend-dev"), ("w2", "backend-dev")]
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B"}], workers=workers)
    run.boot()
    current = finish_together(run, ["a", "b"])

    conflict = BatchResult(current.run_id, base="h0", conflicts={"b": ["app.py"]})
    effects = run.feed(Received(MERGER, conflict))

    assert batch(effects) == ["a"]
    (rejected,) = [e for e in run.log if isinstance(e, ev.TaskRejected)]
    assert (rejected.task, rejected.conflicts) == ("b", ["app.py"])
    assert "conflict with main in: app.py" in rejected.reason
    assert run.state.graph.get("b").state is TaskState.PENDING  # back to its agent


def test_a_gate_that_fails_then_passes_on_the_same_tree_is_flaky_not_a_rejection() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.boot()
    run.done("w1", run.jobs(run.tick())["w1"])
    run.gated(False, reason="tests failed")
    run.gated(True, head="h1")

    assert run.state.graph.get("a").state is TaskState.MERGED
    (flaky,) = [e for e in run.log if isinstance(e, ev.GateFlaky)]
    assert flaky.tasks == ["a"]
    assert not [e for e in run.log if isinstance(e, ev.TaskRejected)]


def test_a_merger_failure_puts_the_batch_back_without_charging_anyone() -> None:
    run = Run([{"id": "a", "title": "A"}])
    run.boot()
    run.done("w1", run.jobs(run.tick())["w1"])
    current = run.state.merges.current
    assert current is not None
    broke = BatchResult(current.run_id, reason="merger error: disk full", infrastructure=True)
    effects = run.feed(Received(MERGER, broke))

    assert batch(effects) == ["a"]
    task = run.state.graph.get("a")
    assert task.state is TaskState.MERGING and task.infra_failures == 1


def test_a_task_that_conflicts_only_with_a_batch_mate_waits_for_it_to_land() -> None:
    """Sent back before the other landed, its agent would retry on a head without the
    change it clashes with; it waits instead, and is tried on the head that has it."""
    workers = [("w1", "backend-dev"), ("w2", "backend-dev")]
    run = Run([{"id": "a", "title": "A"}, {"id": "b", "title": "B"}], workers=workers)
    run.boot()
    current = finish_together(run, ["a", "b"])

    effects = run.feed(Received(MERGER, BatchResult(current.run_id, base="h0", deferred=["b"])))
    assert batch(effects) == ["a"]
    assert run.state.graph.get("b").state is TaskState.MERGING  # not sent back
    assert not steps.finished(run.state)

    effects = run.merged("a", "h1")
    assert batch(effects) == ["b"]  # now on the head that holds a
    assert not [e for e in run.log if isinstance(e, ev.TaskRejected)]
