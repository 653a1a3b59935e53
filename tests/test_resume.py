"""Rebuilding a run's graph from its events, against real git."""

from __future__ import annotations

from pathlib import Path

from orchestrator.engine.resume import rebuild
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskGraph, TaskState
from tests.conftest import run_git

TASKS = [
    {"id": "a", "title": "A"},
    {"id": "b", "title": "B", "deps": ["a"]},
    {"id": "c", "title": "C"},
    {"id": "d", "title": "D", "deps": ["c"]},
]


def submitted(task: str, commit: str) -> ev.TaskSubmitted:
    return ev.TaskSubmitted(
        task=task,
        worker="w1",
        attempt=1,
        commit=commit,
        files=["a.txt"],
        summary="",
        branch=f"pd/r/{task}",
        state="merging",
    )


def commit_on_branch(repo: Path, branch: str, name: str) -> str:
    run_git(repo, "checkout", "-q", "-b", branch, "main")
    (repo / name).write_text(name)
    run_git(repo, "add", name)
    run_git(repo, "commit", "-q", "-m", name)
    sha = run_git(repo, "rev-parse", "HEAD")
    run_git(repo, "checkout", "-q", "main")
    return sha


def test_rebuild_restores_merged_failed_and_pending(git_repo: Path) -> None:
    merged = commit_on_branch(git_repo, "pd/r/a", "a.txt")
    run_git(git_repo, "merge", "-q", "--ff-only", "pd/r/a")
    graph = TaskGraph(TASKS, default_max_attempts=2)
    events = [
        ev.TaskAssigned(task="a", worker="w1", attempt=1),
        submitted("a", merged),
        ev.TaskMerged(task="a", attempt=1, head=merged),
        ev.TaskAssigned(task="c", worker="w2", attempt=1),
        ev.AttemptFailed(task="c", attempt=1, reason="gate", state="pending"),
        ev.TaskAssigned(task="c", worker="w2", attempt=2),
        ev.AttemptFailed(task="c", attempt=2, reason="gate", state="failed"),
        ev.TaskAssigned(task="b", worker="w1", attempt=1),  # running when the crash came
    ]
    count = rebuild(graph, events, git_repo, run_git(git_repo, "rev-parse", "main"))
    assert count == 1
    assert graph.get("a").state is TaskState.MERGED
    assert graph.get("b").state is TaskState.PENDING and [t.id for t in graph.ready()] == ["b"]
    assert graph.get("b").attempts == 0  # the attempt the crash cut short is not counted
    assert graph.get("c").state is TaskState.FAILED and graph.get("c").feedback == ["gate"] * 2
    assert graph.get("d").state is TaskState.BLOCKED


def test_work_merged_but_not_recorded_counts_as_merged(git_repo: Path) -> None:
    """The coordinator died after the merger moved the branch, before task_merged."""
    landed = commit_on_branch(git_repo, "pd/r/a", "a.txt")
    run_git(git_repo, "merge", "-q", "--no-ff", "-m", "merge", "pd/r/a")
    graph = TaskGraph(TASKS)
    events = [
        ev.TaskAssigned(task="a", worker="w1", attempt=1),
        submitted("a", landed),
    ]
    head = run_git(git_repo, "rev-parse", "main")
    assert rebuild(graph, events, git_repo, head) == 1
    assert graph.get("a").state is TaskState.MERGED


def test_submitted_but_not_landed_waits_for_the_merger_again(git_repo: Path) -> None:
    """Finished work is not redone: the version that waited for the merger when the
    coordinator died goes to the merger again (its branch is still there)."""
    pending = commit_on_branch(git_repo, "pd/r/a", "a.txt")
    graph = TaskGraph(TASKS)
    events = [ev.TaskAssigned(task="a", worker="w1", attempt=1), submitted("a", pending)]
    assert rebuild(graph, events, git_repo, run_git(git_repo, "rev-parse", "main")) == 0
    a = graph.get("a")
    assert a.state is TaskState.MERGING and a.commit == pending and a.attempts == 1


def test_rebuild_keeps_handoff_notes_and_a_handed_off_attempt_does_not_count(
    git_repo: Path,
) -> None:
    wip = commit_on_branch(git_repo, "pd/r/a", "wip.txt")
    graph = TaskGraph(TASKS, default_max_attempts=1)
    events = [
        ev.TaskAssigned(task="a", worker="w1", attempt=1),
        ev.AttemptHandedOff(task="a", worker="w1", attempt=1, commit=wip, handoff="n1"),
        ev.TaskAssigned(task="c", worker="w2", attempt=1),
        ev.AttemptFailed(task="c", attempt=1, reason="died", state="failed", handoff="c's note"),
    ]
    rebuild(graph, events, git_repo, run_git(git_repo, "rev-parse", "main"))
    a = graph.get("a")
    assert a.state is TaskState.PENDING and a.start_from == wip and a.handoff == "n1"
    assert a.handoffs == 1 and graph.failed_attempts(a) == 0  # the handoff was no failure
    assert graph.get("c").handoff == "c's note"


def test_infrastructure_failures_and_already_merged_survive_a_resume(git_repo: Path) -> None:
    head = run_git(git_repo, "rev-parse", "main")
    graph = TaskGraph(TASKS, default_max_attempts=1)
    broken = "git: commondir"
    events = [
        ev.TaskAssigned(task="a", worker="w1", attempt=1),
        ev.AttemptInfraFailed(task="a", attempt=1, reason=broken, state="pending"),
        ev.TaskAssigned(task="a", worker="w1", attempt=2),
        ev.AttemptInfraFailed(task="a", attempt=2, reason=broken, state="pending"),
        ev.TaskAssigned(task="c", worker="w2", attempt=1),
        ev.TaskAlreadyMerged(task="c", attempt=1, commit=head),
    ]
    assert rebuild(graph, events, git_repo, head) == 1
    a = graph.get("a")
    assert a.state is TaskState.PENDING and a.feedback == []  # the agent never sees it
    assert a.attempts == 2 and TaskGraph.failed_attempts(a) == 0
    assert graph.get("c").state is TaskState.ALREADY_MERGED and graph.get("c").commit == head
    assert [t.id for t in graph.ready()] == ["a", "d"]  # d's dependency landed
