"""The task graph: validation messages, scheduling order, retries, and a stateful property test
that drives random DAGs through random events and checks the rules after every step."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.tasks.taskgraph import ACTIVE, LANDED, GraphError, TaskGraph, TaskState


def task(tid: str, *deps: str, **extra: object) -> dict[str, object]:
    return {"id": tid, "title": f"do {tid}", "deps": list(deps), **extra}


def run_to_merge(graph: TaskGraph, tid: str) -> None:
    graph.start(tid, "w1")
    graph.submitted(tid, f"pd/run/{tid}", "c0ffee", "did it")
    graph.merged(tid, f"merged-{tid}")


# -- validation ----------------------------------------------------------------------------


def test_duplicate_id_names_the_second_occurrence() -> None:
    with pytest.raises(GraphError) as err:
        TaskGraph([task("a"), task("b"), task("a")])
    assert err.value.field == "tasks[2].id"
    assert "'a'" in err.value.problem and "tasks[0]" in err.value.problem
    assert str(err.value).startswith("tasks[2].id: duplicate id")


def test_unknown_dependency_names_it_and_lists_known_ids() -> None:
    with pytest.raises(GraphError) as err:
        TaskGraph([task("api"), task("ui", "apl")])
    assert err.value.field == "tasks[1].deps"
    assert "'apl'" in err.value.problem
    assert "did you mean 'api'" in err.value.fix
    assert "api, ui" in err.value.fix


def test_unknown_dependency_truncates_a_long_list_of_known_ids() -> None:
    tasks = [task(f"t{i}") for i in range(30)] + [task("x", "zzz")]
    with pytest.raises(GraphError) as err:
        TaskGraph(tasks)
    assert err.value.field == "tasks[30].deps"
    assert "t9, ..." in err.value.fix and "(21 more)" in err.value.fix
    assert "t10" not in err.value.fix


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(GraphError) as err:
        TaskGraph([task("a"), task("b", "b")])
    assert err.value.field == "tasks[1].deps"
    assert "cycle b -> b" in err.value.problem


def test_cycle_is_named_in_order_with_the_edge_to_remove() -> None:
    with pytest.raises(GraphError) as err:
        TaskGraph([task("root"), task("a", "b", "root"), task("b", "c"), task("c", "a")])
    assert "cycle a -> b -> c -> a" in err.value.problem
    assert err.value.field == "tasks[3].deps"  # c holds the edge that closes the cycle
    assert "remove 'a' from the deps of 'c'" in err.value.fix


def test_bad_max_attempts_is_refused() -> None:
    with pytest.raises(GraphError) as err:
        TaskGraph([task("a", max_attempts=0)])
    assert err.value.field == "tasks[0].max_attempts"


def test_empty_graph_is_done() -> None:
    graph = TaskGraph([])
    assert graph.done() and graph.ready() == [] and graph.critical_path() == []
    assert len(graph) == 0


def test_deps_are_copied_and_deduplicated() -> None:
    spec = task("b", "a", "a")
    graph = TaskGraph([task("a"), spec])
    spec["deps"].append("zzz")  # the mission object may change later; the graph must not
    assert graph.get("b").deps == ["a"]
    assert graph.critical_path() == ["a", "b"]


def test_objects_are_read_like_dicts() -> None:
    @dataclass
    class Spec:
        id: str
        title: str
        deps: list[str] = field(default_factory=list)
        max_attempts: int | None = None
        role: str | None = "backend"

    graph = TaskGraph([Spec("a", "A"), Spec("b", "B", ["a"], 5)], default_max_attempts=2)
    assert graph.get("a").max_attempts == 2 and graph.get("b").max_attempts == 5
    assert graph.get("b").deps == ["a"] and graph.get("a").role == "backend"
    assert [n.id for n in graph] == ["a", "b"]


# -- scheduling ----------------------------------------------------------------------------


def test_ready_orders_by_critical_path_then_priority_then_age() -> None:
    graph = TaskGraph(
        [
            task("leaf1", priority=9),
            task("leaf2", priority=1),
            task("leaf3", priority=9),
            task("head"),
            task("mid", "head"),
            task("tail", "mid"),
        ]
    )
    assert graph.get("head").critical_path == 3
    assert [n.id for n in graph.ready()] == ["head", "leaf1", "leaf3", "leaf2"]
    assert graph.critical_path() == ["head", "mid", "tail"]


def test_dependent_is_ready_only_once_every_dependency_is_merged() -> None:
    graph = TaskGraph([task("a"), task("b"), task("c", "a", "b")])
    run_to_merge(graph, "a")
    graph.start("b", "w2")
    graph.submitted("b", "pd/run/b", "abc", "done")
    assert [n.id for n in graph.ready()] == []  # b is submitted, not merged
    with pytest.raises(ValueError, match="not merged"):
        graph.start("c", "w1")
    graph.merged("b", "def")
    assert [n.id for n in graph.ready()] == ["c"]


def test_transitions_record_the_attempt() -> None:
    graph = TaskGraph([task("a")])
    assert graph.start("a", "w1") == 1
    node = graph.get("a")
    assert (node.state, node.worker) == (TaskState.RUNNING, "w1")
    graph.submitted("a", "pd/r/a", "111", "summary")
    assert (node.state, node.branch, node.commit, node.summary) == (
        TaskState.MERGING,
        "pd/r/a",
        "111",
        "summary",
    )
    graph.merged("a", "222")
    assert (node.state, node.commit) == (TaskState.MERGED, "222")
    assert graph.done()


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda g: g.submitted("a", "b", "c", "s"), "cannot submit task 'a': it is pending"),
        (lambda g: g.merged("a", "c"), "cannot merge task 'a': it is pending"),
        (lambda g: g.attempt_failed("a", "x"), "cannot fail an attempt of task 'a'"),
        (lambda g: g.start("b", "w"), "dependencies not merged"),
    ],
)
def test_illegal_transitions_raise(action: Callable[[TaskGraph], object], message: str) -> None:
    graph = TaskGraph([task("a"), task("b", "a")])
    with pytest.raises(ValueError, match=message):
        action(graph)


def test_unknown_task_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no task 'zz'"):
        TaskGraph([task("a")]).start("zz", "w1")


# -- retries, failure, abort ---------------------------------------------------------------


def test_retries_with_feedback_then_fails_and_blocks_dependents() -> None:
    graph = TaskGraph(
        [task("a", max_attempts=2), task("b", "a"), task("c", "b"), task("d")],
    )
    assert graph.start("a", "w1") == 1
    assert graph.attempt_failed("a", "gate: 3 tests failed", handoff="see test_x") is (
        TaskState.PENDING
    )
    node = graph.get("a")
    assert node.worker is None and node.handoff == "see test_x"
    assert [n.id for n in graph.ready()] == ["a", "d"]
    assert graph.start("a", "w2") == 2
    graph.submitted("a", "pd/r/a", "123", "s")
    assert graph.attempt_failed("a", "conflict in x.py") is TaskState.FAILED
    assert node.feedback == ["gate: 3 tests failed", "conflict in x.py"]
    assert graph.get("b").state is TaskState.BLOCKED
    assert graph.get("c").state is TaskState.BLOCKED
    assert graph.get("d").state is TaskState.PENDING
    assert not graph.done()
    run_to_merge(graph, "d")
    assert graph.done()
    assert graph.counts()["failed"] == 1 and graph.counts()["blocked"] == 2


def test_abort_blocks_dependents_and_reports_changes() -> None:
    graph = TaskGraph([task("a"), task("b", "a"), task("c", "b"), task("d"), task("e"), task("f")])
    graph.start("a", "w1")
    assert graph.dependents("a") == {"b", "c"} and graph.dependents("d") == set()
    assert graph.abort("a") == ["a", "b", "c"]
    assert graph.get("a").state is TaskState.ABORTED
    with pytest.raises(ValueError, match="cannot abort task 'b': it is blocked"):
        graph.abort("b")
    run_to_merge(graph, "f")
    graph.start("e", "w2")
    graph.submitted("e", "pd/r/e", "123", "s")
    graph.start("d", "w1")
    assert graph.abort_all() == ["d", "e"]  # running and merging tasks stop too
    assert graph.done()
    assert graph.counts() == {
        "pending": 0,
        "running": 0,
        "reviewing": 0,
        "merging": 0,
        "merged": 1,
        "already-merged": 0,
        "failed": 0,
        "blocked": 2,
        "aborted": 3,
    }


def test_snapshot_is_json_serialisable() -> None:
    graph = TaskGraph([task("a", capabilities=["py"]), task("b", "a")])
    graph.start("a", "w1")
    snap = json.loads(json.dumps(graph.snapshot()))
    assert snap[0]["state"] == "running" and snap[0]["capabilities"] == ["py"]
    assert snap[1]["deps"] == ["a"] and snap[1]["critical_path"] == 1
    assert type(graph.snapshot()[0]["state"]) is str


# -- properties ----------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn, max_tasks: int = 8) -> list[dict[str, object]]:
    """Random DAGs: each task depends only on earlier ones, then the mission is shuffled so
    mission order is not a topological order."""
    n = draw(st.integers(0, max_tasks))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        tasks.append(
            task(
                f"t{i}",
                *(f"t{d}" for d in deps),
                priority=draw(st.integers(0, 2)),
                max_attempts=draw(st.integers(1, 3)),
            )
        )
    return draw(st.permutations(tasks))


def longest_chain(graph: TaskGraph, tid: str) -> int:
    """Reference critical path, computed from scratch by recursion over dependents."""
    children = [n.id for n in graph if tid in n.deps]
    return 1 + max((longest_chain(graph, c) for c in children), default=0)


@settings(max_examples=150, deadline=None)
@given(dags())
def test_critical_path_is_a_real_longest_chain(tasks: list[dict[str, object]]) -> None:
    graph = TaskGraph(tasks)
    for node in graph:
        assert node.critical_path == longest_chain(graph, node.id)
    chain = graph.critical_path()
    assert len(chain) == max((n.critical_path for n in graph), default=0)
    if chain:
        assert graph.get(chain[0]).deps == []
        assert not any(chain[-1] in n.deps for n in graph)
    for earlier, later in itertools.pairwise(chain):
        assert earlier in graph.get(later).deps


@settings(max_examples=150, deadline=None)
@given(dags())
def test_dependents_are_every_task_that_reaches_down_to_it(
    tasks: list[dict[str, object]],
) -> None:
    graph = TaskGraph(tasks)

    def waits_on(node_id: str, target: str) -> bool:  # reference: up the deps, from scratch
        deps = graph.get(node_id).deps
        return target in deps or any(waits_on(d, target) for d in deps)

    for node in graph:
        assert graph.dependents(node.id) == {n.id for n in graph if waits_on(n.id, node.id)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(dags(), st.data())
def test_a_back_edge_is_refused_as_a_cycle(
    tasks: list[dict[str, object]], data: st.DataObject
) -> None:
    by_id = {t["id"]: t for t in tasks}
    start = data.draw(st.sampled_from(sorted(by_id)) if by_id else st.nothing())
    end = start
    while by_id[end]["deps"] and data.draw(st.booleans()):  # walk down a dependency chain
        end = data.draw(st.sampled_from(by_id[end]["deps"]))
    by_id[end]["deps"].append(start)  # end now waits on start, which waits on end
    with pytest.raises(GraphError) as err:
        TaskGraph(tasks)
    problem = err.value.problem
    assert problem.startswith("cycle ")
    cycle = problem.removeprefix("cycle ").split(" (")[0].split(" -> ")
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    for waiter, dep in itertools.pairwise(cycle):
        assert dep in by_id[waiter]["deps"]
    position = int(err.value.field.removeprefix("tasks[").removesuffix("].deps"))
    assert tasks[position]["id"] in cycle


class GraphMachine(RuleBasedStateMachine):
    """Random events on a random DAG; the invariants are the scheduling rules."""

    graph: TaskGraph

    @initialize(
        tasks=dags(),
        needs=st.lists(st.sampled_from([None, "dev", "qa", ("py",), ("py", "web")]), max_size=8),
    )
    def build(self, tasks: list[dict[str, object]], needs: list[object]) -> None:
        for spec, need in zip(tasks, needs, strict=False):  # requirements, for ready_needs
            if isinstance(need, tuple):
                spec["capabilities"] = list(need)
            elif need:
                spec["role"] = need
        self.now = 0.0
        self.graph = TaskGraph(tasks, clock=lambda: self.now)
        self.attempts_seen: dict[str, int] = {n.id: 0 for n in self.graph}
        self.stamps: dict[str, float] = {}  # when each task became ready, by the model
        self.note_ready()

    def note_ready(self) -> None:
        """The model of readiness stamps: a task is stamped when it becomes ready."""
        for node in self.graph:
            ready = node.state is TaskState.PENDING and all(
                self.graph.get(d).state in LANDED for d in node.deps
            )
            if ready:
                self.stamps.setdefault(node.id, self.now)

    def tick(self) -> None:
        self.now += 1.0

    def in_state(self, *states: TaskState) -> list[str]:
        return sorted(n.id for n in self.graph if n.state in states)

    @precondition(lambda self: self.graph.ready())
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from([n.id for n in self.graph.ready()]))
        self.tick()
        assert self.graph.start(tid, "w") == self.attempts_seen[tid] + 1
        self.attempts_seen[tid] += 1
        # Stamped when its last dependency landed (or the graph began), not now.
        assert self.graph.take_ready_at(tid) == self.stamps.pop(tid)
        assert self.graph.take_ready_at(tid) is None  # given out once

    @precondition(lambda self: self.in_state(TaskState.RUNNING))
    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING)))
        self.graph.submitted(tid, f"pd/r/{tid}", "abc", "ok")

    @precondition(lambda self: self.in_state(TaskState.MERGING))
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.MERGING)))
        self.graph.merged(tid, "def")

    @precondition(lambda self: self.in_state(TaskState.RUNNING, TaskState.MERGING))
    @rule(data=st.data())
    def already_merged(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING, TaskState.MERGING)))
        self.graph.already_merged(tid, "def")

    @precondition(lambda self: self.in_state(TaskState.RUNNING, TaskState.MERGING))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING, TaskState.MERGING)))
        node = self.graph.get(tid)
        left = TaskGraph.failed_attempts(node) < node.max_attempts
        expected = TaskState.PENDING if left else TaskState.FAILED
        assert self.graph.attempt_failed(tid, f"reason {node.attempts}") is expected
        assert node.feedback[-1] == f"reason {node.attempts}"

    @precondition(lambda self: self.in_state(TaskState.PENDING, TaskState.RUNNING))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.PENDING, TaskState.RUNNING)))
        changed = self.graph.abort(tid)
        assert changed[0] == tid and set(changed[1:]) <= self.graph.dependents(tid)

    @precondition(lambda self: self.in_state(TaskState.RUNNING, TaskState.MERGING))
    @rule(data=st.data())
    def infra_fail(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING, TaskState.MERGING)))
        self.graph.infra_failed(tid, "disk full", max_failures=2)

    @precondition(lambda self: self.in_state(TaskState.RUNNING))
    @rule(data=st.data())
    def hand_off(self, data: st.DataObject) -> None:
        self.tick()
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING)))
        self.graph.hand_off(tid, "note", "abc")

    @invariant()
    def readiness_is_stamped_when_it_happens(self) -> None:
        self.note_ready()

    @invariant()
    def incremental_queries_equal_a_recomputation(self) -> None:
        nodes = list(self.graph)
        for state in TaskState:
            scanned = [n for n in nodes if n.state is state]
            assert self.graph.in_state(state) == scanned
            assert self.graph.count(state) == len(scanned)
        assert self.graph.counts() == {str(s): sum(n.state is s for n in nodes) for s in TaskState}
        assert self.graph.done() == all(n.state not in ACTIVE for n in nodes)
        ready = self.graph.ready()
        scanned_ready = [
            n.id for n in nodes if n.state is TaskState.PENDING and not self.graph.waits(n)
        ]
        assert sorted(n.id for n in ready) == sorted(scanned_ready)
        assert [n.id for n in nodes if self.graph.is_ready(n.id)] == scanned_ready
        wanted = Counter((n.role or None, frozenset(n.capabilities)) for n in ready)
        assert dict(self.graph.ready_needs()) == dict(wanted)
        scratch = [{**dataclasses.asdict(n), "state": str(n.state)} for n in nodes]
        assert json.loads(self.graph.snapshot_json()) == json.loads(json.dumps(scratch))

    @invariant()
    def started_tasks_have_merged_deps(self) -> None:
        for node in self.graph:
            if node.state in (TaskState.RUNNING, TaskState.MERGING, *LANDED):
                assert all(self.graph.get(d).state in LANDED for d in node.deps)

    @invariant()
    def attempts_are_bounded(self) -> None:
        for node in self.graph:
            failed = TaskGraph.failed_attempts(node)
            assert failed <= node.max_attempts
            assert node.attempts == self.attempts_seen[node.id]
            if node.state is TaskState.FAILED:
                assert failed == node.max_attempts or node.infra_failures == 2

    @invariant()
    def blocked_tasks_have_a_dead_dependency(self) -> None:
        dead = (TaskState.FAILED, TaskState.ABORTED, TaskState.BLOCKED)
        for node in self.graph:
            if node.state is TaskState.BLOCKED:
                assert any(self.graph.get(d).state in dead for d in node.deps)

    @invariant()
    def ready_is_exactly_the_startable_tasks_in_order(self) -> None:
        ready = self.graph.ready()
        expected = {
            n.id
            for n in self.graph
            if n.state is TaskState.PENDING
            and all(self.graph.get(d).state in LANDED for d in n.deps)
        }
        assert len(ready) == len(expected) and {n.id for n in ready} == expected
        keys = [(-n.critical_path, -n.priority, n.index) for n in ready]
        assert keys == sorted(keys)
        paths = [n.critical_path for n in ready]
        assert paths == sorted(paths, reverse=True)

    def stuck(self) -> bool:
        """No start, submit, merge or fail can fire; only aborts are left."""
        return not self.graph.ready() and not self.in_state(TaskState.RUNNING, TaskState.MERGING)

    @precondition(lambda self: self.stuck())
    @rule()
    def no_progress_means_done(self) -> None:
        # A pending task here would wait forever: it should have been blocked.
        assert self.graph.done()
        assert self.graph.abort_all() == []


GraphMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_graph_machine = GraphMachine.TestCase


def test_infrastructure_failures_are_not_attempts_until_their_own_bound() -> None:
    graph = TaskGraph([task("a"), task("b", "a")], default_max_attempts=1)
    for _ in range(2):
        graph.start("a", "w1")
        assert graph.infra_failed("a", "git broke", max_failures=3) is TaskState.PENDING
    assert graph.get("a").feedback == [] and graph.failed_attempts(graph.get("a")) == 0
    graph.start("a", "w1")
    assert graph.infra_failed("a", "git broke", max_failures=3) is TaskState.FAILED
    assert graph.get("a").feedback == ["git broke"]
    assert graph.get("b").state is TaskState.BLOCKED


def test_a_dependent_is_stamped_ready_when_its_dependency_merges() -> None:
    clock = iter([1.0, 2.0, 3.0, 4.0])
    graph = TaskGraph([task("a"), task("b", "a")], clock=lambda: next(clock))
    assert graph.take_ready_at("a") == 1.0  # ready from the start: stamped at build
    graph.start("a", "w1")
    graph.submitted("a", "pd/r/a", "c0ffee", "ok")
    graph.merged("a", "merged-a")  # b becomes ready now: the clock's next reading
    assert [n.id for n in graph.ready()] == ["b"]
    assert graph.take_ready_at("b") == 2.0


# ---- escalation to the top model tier ----------------------------------------------


def send_back_by_review(graph: TaskGraph, task_id: str) -> None:
    graph.start(task_id, "w1")
    graph.submitted(task_id, "pd/r/a/work", "c1", "done")
    graph.start_review(task_id, "w2")
    assert graph.reviewed(task_id, approved=False, feedback="fix it") is TaskState.PENDING


def test_review_send_backs_handoffs_and_pds_failures_do_not_escalate() -> None:
    """README: "the third attempt of a task that failed twice" runs on the top tier. A
    review's request for changes, a handoff and pd's own breakage are not failures."""
    graph = TaskGraph([{"id": "a", "title": "A"}], review=True, max_review_rounds=3)
    send_back_by_review(graph, "a")
    send_back_by_review(graph, "a")
    graph.start("a", "w1")
    assert not graph.escalated("a")  # attempt 3, no failure yet
    graph.attempt_failed("a", "tests fail")
    graph.start("a", "w1")
    graph.hand_off("a", "note", "c2")
    graph.start("a", "w1")
    graph.infra_failed("a", "git broke", max_failures=5)
    graph.start("a", "w1")
    assert not graph.escalated("a")  # attempt 6, one failure
    graph.attempt_failed("a", "tests fail again")
    graph.start("a", "w1")
    assert graph.escalated("a")  # two failures: this attempt goes to the top tier


def test_a_critical_task_is_escalated_from_its_first_attempt() -> None:
    graph = TaskGraph([{"id": "a", "title": "A", "critical": True}, {"id": "b", "title": "B"}])
    graph.start("a", "w1")
    graph.start("b", "w2")
    assert graph.escalated("a") and not graph.escalated("b")
