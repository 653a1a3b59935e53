"""Review: the graph's review transitions (examples and a stateful property test), the
reviewer's ending tool and diff, and rebuilding a reviewing run from its events."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.agent.reviewer import (
    SUBMIT_REVIEW,
    last_review_comments,
    review_diff,
    review_feedback,
    review_toolbox,
)
from orchestrator.engine.resume import rebuild
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskGraph, TaskState
from tests.conftest import run_git
from tests.test_taskgraph import dags


def reviewed_graph(rounds: int = 2, **extra: object) -> TaskGraph:
    return TaskGraph(
        [{"id": "a", "title": "A", **extra}, {"id": "b", "title": "B", "deps": ["a"]}],
        review=True,
        max_review_rounds=rounds,
    )


def submit(graph: TaskGraph, tid: str, commit: str, worker: str = "w1") -> TaskState:
    graph.start(tid, worker)
    return graph.submitted(tid, f"pd/r/{tid}", commit, "did it")


# -- transitions -------------------------------------------------------------------------


def test_changes_go_back_with_feedback_and_the_reviewed_commit() -> None:
    graph = reviewed_graph()
    assert submit(graph, "a", "v1") is TaskState.REVIEWING
    assert [n.id for n in graph.needs_reviewer()] == ["a"]
    assert graph.start_review("a", "w2") == 1
    assert graph.needs_reviewer() == []
    assert graph.reviewed("a", False, "rename it") is TaskState.PENDING
    node = graph.get("a")
    assert node.feedback == ["rename it"] and node.start_from == "v1"
    assert node.review_rounds == 1 and node.verdict == "request_changes"
    assert [n.id for n in graph.ready()] == ["a"]
    assert submit(graph, "a", "v2") is TaskState.REVIEWING
    assert graph.start_review("a", "w2") == 2
    assert graph.reviewed("a", True) is TaskState.MERGING
    graph.merged("a", "head")
    assert [n.id for n in graph.ready()] == ["b"]


def test_after_the_last_round_the_next_version_skips_review() -> None:
    graph = reviewed_graph(rounds=1)
    submit(graph, "a", "v1")
    graph.start_review("a", "w2")
    graph.reviewed("a", False, "no")
    assert submit(graph, "a", "v2") is TaskState.MERGING  # the gate still decides


def test_review_rounds_are_not_failed_attempts() -> None:
    graph = reviewed_graph(rounds=3, max_attempts=1)
    for version in ("v1", "v2", "v3"):
        submit(graph, "a", version)
        graph.start_review("a", "w2")
        graph.reviewed("a", False, f"fix {version}")
    assert graph.get("a").attempts == 3 and graph.get("a").state is TaskState.PENDING
    submit(graph, "a", "v4")  # rounds used up: to the merger
    assert graph.attempt_failed("a", "gate failed") is TaskState.FAILED  # the one real failure


def test_a_gate_rejection_starts_over_from_the_target() -> None:
    graph = reviewed_graph()
    submit(graph, "a", "v1")
    graph.start_review("a", "w2")
    graph.reviewed("a", False, "fix")
    submit(graph, "a", "v2")
    graph.start_review("a", "w2")
    graph.reviewed("a", True)
    graph.attempt_failed("a", "conflict in x.py")
    assert graph.get("a").start_from is None
    assert submit(graph, "a", "v3") is TaskState.REVIEWING  # a new version is reviewed again


def test_a_crashed_fix_attempt_still_builds_on_the_reviewed_commit() -> None:
    graph = reviewed_graph()
    submit(graph, "a", "v1")
    graph.start_review("a", "w2")
    graph.reviewed("a", False, "fix")
    graph.start("a", "w1")
    graph.attempt_failed("a", "worker died")
    assert graph.get("a").start_from == "v1" and graph.get("a").state is TaskState.PENDING


def test_the_implementer_never_reviews_its_own_work() -> None:
    graph = reviewed_graph()
    submit(graph, "a", "v1", worker="w2")
    with pytest.raises(ValueError, match="its implementer cannot review it"):
        graph.start_review("a", "w2")
    graph.start_review("a", "w3")
    with pytest.raises(ValueError, match="it has a reviewer"):
        graph.start_review("a", "w4")


def test_failed_reviews_are_retried_then_the_task_fails() -> None:
    graph = reviewed_graph()
    submit(graph, "a", "v1")
    for attempt in range(2):
        graph.start_review("a", "w2")
        assert graph.review_failed("a", f"crash {attempt}", max_failures=3) is TaskState.REVIEWING
        assert [n.id for n in graph.needs_reviewer()] == ["a"]
    graph.start_review("a", "w3")
    assert graph.review_failed("a", "crash 2", max_failures=3) is TaskState.FAILED
    assert graph.get("b").state is TaskState.BLOCKED
    assert graph.get("a").reviews == 0  # no verdict was given


def test_a_task_can_opt_out_of_the_missions_review() -> None:
    graph = TaskGraph([{"id": "a", "title": "A", "review": False}], review=True)
    assert submit(graph, "a", "v1") is TaskState.MERGING
    graph = TaskGraph([{"id": "a", "title": "A", "review": True}])
    assert submit(graph, "a", "v1") is TaskState.REVIEWING


def test_feedback_comments_are_found_again() -> None:
    entry = review_feedback(2, "w3", "tech-lead", "1. must: add a test\n2. nit: name")
    assert entry.startswith("Review round 2 (tech-lead, w3) requested changes:")
    assert last_review_comments(["gate failed", entry, "worker died"]) == (
        "1. must: add a test\n2. nit: name"
    )
    assert last_review_comments(["gate failed"]) == ""


# -- the property: nothing merges unreviewed while rounds are left ----------------------------


class ReviewMachine(RuleBasedStateMachine):
    """Random DAGs, some tasks reviewed, random events in the coordinator's legal order."""

    graph: TaskGraph

    @initialize(tasks=dags(max_tasks=6), flags=st.lists(st.booleans(), min_size=6, max_size=6))
    def build(self, tasks: list[dict[str, object]], flags: list[bool]) -> None:
        rounds = 1 + len(tasks) % 3
        for spec, flag in zip(tasks, flags, strict=False):
            spec["review"] = flag
        self.graph = TaskGraph(tasks, review=False, max_review_rounds=rounds)
        self.versions = 0
        self.approved: dict[str, str | None] = {n.id: None for n in self.graph}  # commit
        self.changes: dict[str, int] = {n.id: 0 for n in self.graph}
        self.failures: dict[str, int] = {n.id: 0 for n in self.graph}
        self.started: dict[str, int] = {n.id: 0 for n in self.graph}
        self.reviewed_commit: dict[str, str | None] = {n.id: None for n in self.graph}

    def in_state(self, *states: TaskState) -> list[str]:
        return sorted(n.id for n in self.graph if n.state in states)

    def unheld(self) -> list[str]:
        return [n.id for n in self.graph.needs_reviewer()]

    def held(self) -> list[str]:
        return [n.id for n in self.graph if n.state is TaskState.REVIEWING and n.reviewer]

    @precondition(lambda self: self.graph.ready())
    @rule(data=st.data(), worker=st.sampled_from(["w1", "w2", "w3"]))
    def start(self, data: st.DataObject, worker: str) -> None:
        tid = data.draw(st.sampled_from([n.id for n in self.graph.ready()]))
        self.started[tid] += 1
        assert self.graph.start(tid, worker) == self.started[tid]

    @precondition(lambda self: self.in_state(TaskState.RUNNING))
    @rule(data=st.data())
    def submit(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING)))
        node = self.graph.get(tid)
        self.versions += 1
        state = self.graph.submitted(tid, f"pd/r/{tid}", f"v{self.versions}", "ok")
        wants_review = node.review and self.changes[tid] < node.max_review_rounds
        assert state is (TaskState.REVIEWING if wants_review else TaskState.MERGING)
        self.approved[tid] = None

    @precondition(lambda self: self.unheld())
    @rule(data=st.data(), reviewer=st.sampled_from(["w1", "w2", "w3"]))
    def start_review(self, data: st.DataObject, reviewer: str) -> None:
        tid = data.draw(st.sampled_from(self.unheld()))
        node = self.graph.get(tid)
        if reviewer == node.worker:
            with pytest.raises(ValueError):
                self.graph.start_review(tid, reviewer)
            return
        assert self.graph.start_review(tid, reviewer) == node.reviews + 1

    @precondition(lambda self: self.held())
    @rule(data=st.data(), approve=st.booleans())
    def verdict(self, data: st.DataObject, approve: bool) -> None:
        tid = data.draw(st.sampled_from(self.held()))
        node = self.graph.get(tid)
        commit = node.commit
        state = self.graph.reviewed(tid, approve, f"comments on {commit}")
        if approve:
            assert state is TaskState.MERGING
            self.approved[tid] = commit
        else:
            assert state is TaskState.PENDING and node.start_from == commit
            self.changes[tid] += 1
            self.reviewed_commit[tid] = commit

    @precondition(lambda self: self.held())
    @rule(data=st.data())
    def reviewer_crashes(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.held()))
        before = self.graph.get(tid).review_failures
        state = self.graph.review_failed(tid, "reviewer died", max_failures=2)
        assert state is (TaskState.FAILED if before + 1 >= 2 else TaskState.REVIEWING)

    @precondition(lambda self: self.in_state(TaskState.MERGING))
    @rule(data=st.data())
    def merge(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.in_state(TaskState.MERGING)))
        node = self.graph.get(tid)
        # The property: a reviewed task merges only the version a reviewer approved, or
        # once its review rounds ran out.
        if node.review:
            assert self.approved[tid] == node.commit or self.changes[tid] >= node.max_review_rounds
        self.graph.merged(tid, f"head-{tid}")

    @precondition(lambda self: self.in_state(TaskState.RUNNING, TaskState.MERGING))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.in_state(TaskState.RUNNING, TaskState.MERGING)))
        node = self.graph.get(tid)
        rejected = node.state is TaskState.MERGING
        self.failures[tid] += 1
        expected = TaskState.PENDING if self.failures[tid] < node.max_attempts else TaskState.FAILED
        assert self.graph.attempt_failed(tid, "gate") is expected
        if rejected:
            self.reviewed_commit[tid] = None

    @precondition(lambda self: self.in_state(TaskState.PENDING, TaskState.REVIEWING))
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        tid = data.draw(st.sampled_from(self.in_state(TaskState.PENDING, TaskState.REVIEWING)))
        self.graph.abort(tid)

    def stuck(self) -> bool:
        busy = (TaskState.RUNNING, TaskState.REVIEWING, TaskState.MERGING)
        return not self.graph.ready() and not self.in_state(*busy)

    @precondition(lambda self: self.stuck())
    @rule()
    def no_progress_means_done(self) -> None:
        assert self.graph.done()  # nothing waits forever, in review or elsewhere

    @invariant()
    def unreviewed_tasks_never_enter_review(self) -> None:
        for node in self.graph:
            if not node.review:
                assert node.reviews == 0 and node.state is not TaskState.REVIEWING

    @invariant()
    def rounds_and_attempts_are_bounded(self) -> None:
        for node in self.graph:
            assert node.review_rounds == self.changes[node.id] <= node.max_review_rounds
            assert self.graph.failed_attempts(node) <= node.max_attempts
            # Every attempt failed, was sent back by a review, or is the current version.
            ended = self.failures[node.id] + self.changes[node.id]
            assert node.attempts == self.started[node.id]
            assert ended <= node.attempts <= ended + 1
            if node.state in (TaskState.RUNNING, TaskState.REVIEWING, TaskState.MERGING):
                assert node.attempts == ended + 1

    @invariant()
    def the_next_attempt_builds_on_the_last_reviewed_commit(self) -> None:
        for node in self.graph:
            if node.state is TaskState.PENDING:
                assert node.start_from == self.reviewed_commit[node.id]

    @invariant()
    def a_reviewer_is_never_the_implementer(self) -> None:
        for node in self.graph:
            if node.state is TaskState.REVIEWING and node.reviewer:
                assert node.reviewer != node.worker

    @invariant()
    def merged_reviewed_tasks_had_an_approval_or_ran_out_of_rounds(self) -> None:
        for node in self.graph:
            if node.review and node.state in (TaskState.MERGING, TaskState.MERGED):
                ok = self.approved[node.id] is not None
                assert ok or self.changes[node.id] >= node.max_review_rounds


ReviewMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_review_machine = ReviewMachine.TestCase


# -- the reviewer's tools ----------------------------------------------------------------


def test_submit_review_sends_malformed_verdicts_back(tmp_path: Path) -> None:
    box = review_toolbox(tmp_path, ["git_blame", "write_file"], None, {}, 30, 20_000)
    names = {s["name"] for s in box.specs()}
    assert {"read_file", "git_diff", "run_tests", "git_blame", "submit_review"} <= names
    assert not names & {"write_file", "edit_file", "run_command", "finish", "git_commit"}
    bad = box.call("submit_review", {"verdict": "maybe", "comments": "x"})
    assert bad.is_error and not bad.finished and "maybe" in bad.content
    empty = box.call("submit_review", {"verdict": "request_changes", "comments": "  "})
    assert empty.is_error and not empty.finished and "comments" in empty.content
    done = box.call("submit_review", {"verdict": "request_changes", "comments": "1. must: x"})
    assert done.finished and done.final == {"verdict": "request_changes", "comments": "1. must: x"}
    assert box.ending is SUBMIT_REVIEW


def test_the_diff_is_the_tasks_work_only(git_repo: Path) -> None:
    base = run_git(git_repo, "rev-parse", "HEAD")
    run_git(git_repo, "checkout", "-q", "-b", "task", base)
    (git_repo / "feat.py").write_text("def hello():\n    return 1\n")
    run_git(git_repo, "add", "feat.py")
    run_git(git_repo, "commit", "-q", "-m", "feat")
    commit = run_git(git_repo, "rev-parse", "HEAD")
    run_git(git_repo, "checkout", "-q", "main")
    (git_repo / "other.py").write_text("x = 1\n")  # merged by another task meanwhile
    run_git(git_repo, "add", "other.py")
    run_git(git_repo, "commit", "-q", "-m", "other")
    head = run_git(git_repo, "rev-parse", "HEAD")
    stat, diff = review_diff(git_repo, head, commit)
    assert "+def hello" in diff and "other.py" not in diff and "feat.py" in stat
    _, capped = review_diff(git_repo, head, commit, cap=40)
    assert "characters cut" in capped


# -- resume --------------------------------------------------------------------------------


def commit_on(repo: Path, branch: str, name: str, start: str = "main") -> str:
    run_git(repo, "checkout", "-q", "-B", branch, start)
    (repo / name).write_text(name)
    run_git(repo, "add", name)
    run_git(repo, "commit", "-q", "-m", name)
    sha = run_git(repo, "rev-parse", "HEAD")
    run_git(repo, "checkout", "-q", "main")
    return sha


def submitted(task: str, attempt: int, commit: str, state: str) -> list[ev.Event]:
    """An attempt as the coordinator records it: assigned, then submitted."""
    return [
        ev.TaskAssigned(task=task, worker="w1", attempt=attempt),
        ev.TaskSubmitted(
            task=task,
            worker="w1",
            attempt=attempt,
            commit=commit,
            files=[f"{task}.txt"],
            branch=f"pd/r/{task}",
            summary=f"{task} v{attempt}",
            state=state,
        ),
    ]


def verdict(task: str, round_: int, commit: str, approve: bool) -> list[ev.Event]:
    """A review job as the coordinator records it: started, then its verdict."""
    started = ev.ReviewStarted(task=task, worker="w2", round=round_, commit=commit)
    return [
        started,
        ev.ReviewDone(
            task=task,
            worker="w2",
            round=round_,
            verdict="approve" if approve else "request_changes",
            comments="c",
            commit=commit,
            feedback=review_feedback(round_, "w2", "tech-lead", f"fix {task}"),
            state="merging" if approve else "pending",
        ),
    ]


def test_rebuild_keeps_reviews_in_review_approved_and_sent_back(git_repo: Path) -> None:
    tasks = [{"id": t, "title": t} for t in ("open", "approved", "back", "exhausted")]
    graph = TaskGraph(tasks, review=True, max_review_rounds=1)
    v = {t: commit_on(git_repo, f"pd/r/{t}", f"{t}.txt") for t in ("open", "approved", "back")}
    fix = commit_on(git_repo, "pd/r/exhausted", "fix.txt")
    events = [
        *submitted("open", 1, v["open"], "reviewing"),
        ev.ReviewStarted(task="open", worker="w2", round=1, commit=v["open"]),
        *submitted("approved", 1, v["approved"], "reviewing"),
        *verdict("approved", 1, v["approved"], True),
        ev.BatchStarted(commits={"approved": v["approved"]}, batch=1),
        *submitted("back", 1, v["back"], "reviewing"),
        *verdict("back", 1, v["back"], False),
        *submitted("exhausted", 1, "e1", "reviewing"),
        *verdict("exhausted", 1, "e1", False),
        *submitted("exhausted", 2, fix, "merging"),
        ev.ReviewRoundsExhausted(task="exhausted", rounds=1, commit=fix),
    ]
    head = run_git(git_repo, "rev-parse", "main")
    assert rebuild(graph, events, git_repo, head) == 0

    open_ = graph.get("open")  # reviewed again: no reviewer holds it
    assert open_.state is TaskState.REVIEWING and open_.reviewer is None
    assert open_.commit == v["open"] and open_.worker == "w1" and open_.branch == "pd/r/open"
    assert [n.id for n in graph.needs_reviewer()] == ["open"]
    approved = graph.get("approved")  # goes to the merge queue
    assert approved.state is TaskState.MERGING and approved.commit == v["approved"]
    assert approved.verdict == "approve" and approved.attempts == 1
    back = graph.get("back")  # its fix builds on the reviewed commit
    assert back.state is TaskState.PENDING and back.start_from == v["back"]
    assert back.review_rounds == 1 and back.attempts == 1
    assert last_review_comments(back.feedback) == "fix back"
    assert graph.start("back", "w1") == 2
    exhausted = graph.get("exhausted")
    assert exhausted.state is TaskState.MERGING and exhausted.commit == fix
    assert exhausted.attempts == 2 and exhausted.review_rounds == 1


def test_rebuild_after_a_rejected_approved_version_starts_over(git_repo: Path) -> None:
    graph = TaskGraph([{"id": "a", "title": "a"}], review=True)
    v1 = commit_on(git_repo, "pd/r/a", "a1.txt")
    v2 = commit_on(git_repo, "pd/r/a", "a2.txt", start="pd/r/a")
    events = [
        *submitted("a", 1, v1, "reviewing"),
        *verdict("a", 1, v1, False),
        *submitted("a", 2, v2, "reviewing"),
        *verdict("a", 2, v2, True),
        ev.TaskRejected(task="a", attempt=2, reason="gate failed"),
        ev.AttemptFailed(task="a", attempt=2, reason="gate", state="pending"),
    ]
    rebuild(graph, events, git_repo, run_git(git_repo, "rev-parse", "main"))
    node = graph.get("a")
    assert node.state is TaskState.PENDING and node.start_from is None
    assert node.attempts == 2 and node.review_rounds == 1 and node.reviews == 2
    assert graph.failed_attempts(node) == 1


def test_rebuild_of_reviews_that_failed_for_good(git_repo: Path) -> None:
    graph = TaskGraph([{"id": "a", "title": "a"}, {"id": "b", "title": "b", "deps": ["a"]}])
    events = [
        *submitted("a", 1, "x", "reviewing"),
        ev.ReviewFailed(task="a", worker="w2", round=1, reason="r", failures=1, state="reviewing"),
        ev.ReviewFailed(task="a", worker="w3", round=1, reason="r2", failures=2, state="failed"),
    ]
    rebuild(graph, events, git_repo, run_git(git_repo, "rev-parse", "main"))
    assert graph.get("a").state is TaskState.FAILED and graph.get("a").feedback == ["r2"]
    assert graph.get("b").state is TaskState.BLOCKED
