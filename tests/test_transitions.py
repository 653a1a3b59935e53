"""One state machine: whatever a live run does to the task graph, replaying the events it
recorded through the same ``apply`` gives the same graph, and each ``Change`` names
exactly the tasks that became ready or blocked."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskGraph, TaskState
from orchestrator.tasks.transitions import apply, interrupted, replay
from tests.test_taskgraph import dags


def ready_ids(graph: TaskGraph) -> set[str]:
    return {t.id for t in graph if t.state is TaskState.PENDING and not graph.waits(t)}


def blocked_ids(graph: TaskGraph) -> set[str]:
    return {t.id for t in graph if t.state is TaskState.BLOCKED}


def fields(graph: TaskGraph) -> list[dict[str, object]]:
    return [dataclasses.asdict(t) for t in graph]


class LiveRun(RuleBasedStateMachine):
    """Drive a graph the way the coordinator does: build an event, apply it, record what
    ``apply`` returns."""

    @initialize(tasks=dags(), review=st.booleans(), attempts=st.integers(1, 3))
    def build(self, tasks: list[dict[str, object]], review: bool, attempts: int) -> None:
        self.spec = dict(tasks=tasks, review=review, default_max_attempts=attempts)
        self.graph = TaskGraph(**self.spec)  # type: ignore[arg-type]
        self.log: list[ev.Event] = []
        self.n = 0

    def live(self, event: ev.Event) -> None:
        ready, blocked = ready_ids(self.graph), blocked_ids(self.graph)
        change = apply(self.graph, event)
        assert set(change.ready) == ready_ids(self.graph) - ready
        assert set(change.blocked) == blocked_ids(self.graph) - blocked
        self.log.append(change.event)

    def pick(self, data: st.DataObject, *states: TaskState) -> str | None:
        ids = [t.id for t in self.graph if t.state in states]
        return data.draw(st.sampled_from(ids)) if ids else None

    @rule(data=st.data())
    def assign(self, data: st.DataObject) -> None:
        ids = sorted(ready_ids(self.graph))
        if ids:
            self.live(ev.TaskAssigned(task=data.draw(st.sampled_from(ids)), worker="w1"))

    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        if tid := self.pick(data, TaskState.RUNNING):
            self.n += 1
            node = self.graph.get(tid)
            self.live(
                ev.TaskSubmitted(
                    task=tid,
                    worker="w1",
                    attempt=node.attempts,
                    commit=f"c{self.n}",
                    files=["f"],
                    summary=f"v{self.n}",
                    branch=f"pd/r/{tid}/work",
                    state="",
                )
            )

    @rule(data=st.data(), approve=st.booleans())
    def review(self, data: st.DataObject, approve: bool) -> None:
        tid = self.pick(data, TaskState.REVIEWING)
        if tid is None:
            return
        node = self.graph.get(tid)
        if node.reviewer is None:
            commit = node.commit or ""
            self.live(
                ev.ReviewStarted(task=tid, worker="w2", round=node.reviews + 1, commit=commit)
            )
            return
        verdict = "approve" if approve else "request_changes"
        self.live(ev.ReviewDone(task=tid, worker="w2", round=node.reviews + 1, verdict=verdict))

    @rule(data=st.data())
    def review_breaks(self, data: st.DataObject) -> None:
        tid = self.pick(data, TaskState.REVIEWING)
        if tid and self.graph.get(tid).reviewer is not None:
            self.live(
                ev.ReviewFailed(task=tid, worker="w2", round=1, reason="r", failures=1, state="")
            )

    @rule(data=st.data(), outcome=st.sampled_from(["merged", "already", "rejected", "broke"]))
    def merger(self, data: st.DataObject, outcome: str) -> None:
        tid = self.pick(data, TaskState.MERGING)
        if tid is None:
            return
        self.n += 1
        attempt = self.graph.get(tid).attempts
        if outcome == "merged":
            self.live(ev.TaskMerged(task=tid, attempt=attempt, head=f"h{self.n}"))
        elif outcome == "already":
            self.live(ev.TaskAlreadyMerged(task=tid, attempt=attempt, commit=f"h{self.n}"))
        elif outcome == "rejected":
            self.live(ev.TaskRejected(task=tid, attempt=attempt, reason="gate"))
            self.live(ev.AttemptFailed(task=tid, attempt=attempt, reason="gate", state=""))
        else:
            self.live(ev.AttemptInfraFailed(task=tid, attempt=attempt, reason="disk", state=""))

    @rule(data=st.data(), how=st.sampled_from(["failed", "handed_off", "broke"]))
    def attempt_ends(self, data: st.DataObject, how: str) -> None:
        tid = self.pick(data, TaskState.RUNNING)
        if tid is None:
            return
        attempt = self.graph.get(tid).attempts
        if how == "failed":
            self.live(ev.AttemptFailed(task=tid, attempt=attempt, reason="tests", state=""))
        elif how == "handed_off":
            self.live(
                ev.AttemptHandedOff(
                    task=tid, worker="w1", attempt=attempt, commit="wip", handoff="n"
                )
            )
        else:
            self.live(ev.AttemptInfraFailed(task=tid, attempt=attempt, reason="git", state=""))

    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        if tid := self.pick(data, *TaskState):
            self.live(ev.TaskAborted(task=tid))

    @invariant()
    def replaying_the_log_gives_the_same_graph(self) -> None:
        again = TaskGraph(**self.spec)  # type: ignore[arg-type]
        replay(again, self.log, resume=False)
        assert fields(again) == fields(self.graph)

    @invariant()
    def resuming_gives_back_only_what_was_in_flight(self) -> None:
        again = TaskGraph(**self.spec)  # type: ignore[arg-type]
        replay(again, self.log)
        for live, resumed in zip(self.graph, again, strict=True):
            if live.state is TaskState.RUNNING:
                assert resumed.state is TaskState.PENDING
                assert resumed.attempts == live.attempts - 1  # the lost attempt is not counted
            else:
                assert resumed.state is live.state and resumed.attempts == live.attempts
                # a review job in progress is handed out again; nothing else changes
                wanted = None if live.state is TaskState.REVIEWING else live.reviewer
                assert resumed.reviewer == wanted


LiveRun.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_live_run_and_replay = LiveRun.TestCase


@given(dags())
def test_an_unknown_or_taskless_event_changes_nothing(tasks: list[dict[str, object]]) -> None:
    graph = TaskGraph(tasks)
    before = [dataclasses.asdict(t) for t in graph]
    for event in (
        ev.RunStarted(mission="m"),
        ev.Unknown(name="from_the_future", raw={"kind": "from_the_future", "task": "t0"}),
        ev.TaskMerged(task="no-such-task", attempt=1, head="h"),
    ):
        assert apply(graph, event).event is event
    assert [dataclasses.asdict(t) for t in graph] == before


def test_interrupted_review_goes_to_a_reviewer_again() -> None:
    graph = TaskGraph([{"id": "a", "title": "A"}], review=True)
    apply(graph, ev.TaskAssigned(task="a", worker="w1"))
    apply(
        graph,
        ev.TaskSubmitted(
            task="a", worker="w1", attempt=1, commit="c", files=[], summary="", branch="b", state=""
        ),
    )
    apply(graph, ev.ReviewStarted(task="a", worker="w2", round=1, commit="c"))
    interrupted(graph)
    node = graph.get("a")
    assert node.state is TaskState.REVIEWING and node.reviewer is None and node.attempts == 1


def test_a_task_aborted_in_review_resumes_aborted_as_it_was() -> None:
    """Found by the state machine: only a review still in progress is handed out again."""
    graph = TaskGraph([{"id": "a", "title": "A"}], review=True)
    log = [
        apply(graph, event).event
        for event in (
            ev.TaskAssigned(task="a", worker="w1"),
            ev.TaskSubmitted(
                task="a", worker="w1", attempt=1, commit="c", files=[], summary="", branch="b"
            ),
            ev.ReviewStarted(task="a", worker="w2", round=1, commit="c"),
            ev.TaskAborted(task="a"),
        )
    ]
    again = TaskGraph([{"id": "a", "title": "A"}], review=True)
    replay(again, log)
    assert fields(again) == fields(graph) and again.get("a").state is TaskState.ABORTED
