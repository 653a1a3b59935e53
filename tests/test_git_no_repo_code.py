"""pd's own git never runs code the repository configures: hooks, fsmonitor, external diff.

An agent that could write ``.git/config`` or ``.git/hooks`` (or a user's repository set up
that way) must not get pd's worker, merger or coordinator to run its programs: those
processes hold the API keys. Each trap below leaves a marker file when it runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.agent.attempt import commit_work
from orchestrator.agent.reviewer import review_diff
from orchestrator.system import gitutil
from orchestrator.system.worktrees import WorktreeManager
from orchestrator.wire.messages import TaskJob
from tests.conftest import make_repo, run_git


@pytest.fixture
def trapped(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose config and hooks run a program that writes into ``marks``."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    marks = tmp_path / "marks"
    marks.mkdir()
    trap = tmp_path / "trap.sh"
    trap.write_text(f'#!/bin/sh\necho "$0 $*" >> {marks}/ran\nexit 0\n')
    trap.chmod(0o755)
    hooks = repo / ".git" / "hooks"
    for hook in ("pre-commit", "post-commit", "post-checkout", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\n{trap} {hook}\n")
        (hooks / hook).chmod(0o755)
    run_git(repo, "config", "core.fsmonitor", str(trap))
    run_git(repo, "config", "diff.external", str(trap))
    run_git(repo, "config", "diff.trap.textconv", str(trap))
    (repo / ".gitattributes").write_text("*.txt diff=trap\n")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "--no-verify", "-m", "attributes")
    (marks / "ran").unlink(missing_ok=True)  # the set-up commit itself may trip them
    return repo, marks


def test_the_traps_do_run_in_plain_git(trapped: tuple[Path, Path]) -> None:
    """The control: the same calls through plain git do run the repository's programs."""
    repo, marks = trapped
    (repo / "a.txt").write_text("two\n")
    run_git(repo, "status", "--porcelain")
    run_git(repo, "diff")
    assert (marks / "ran").is_file()


def test_worker_git_calls_run_no_hook_fsmonitor_or_external_diff(
    trapped: tuple[Path, Path],
) -> None:
    repo, marks = trapped
    base = gitutil.rev_parse(repo, "HEAD")
    assert base is not None
    manager = WorktreeManager(repo, repo.parent / "worktrees")
    path = manager.prepare("w1", base, "pd/run/t1")
    (path / "a.txt").write_text("two\n")
    assert gitutil.is_dirty(path)
    job = TaskJob(
        task_id="t1", attempt=1, title="t", description="", branch="pd/run/t1", target_head=base
    )
    commit, changed = commit_work(path, job, "done", "w1", "backend-dev")
    assert changed == ["a.txt"]
    _stat, diff = review_diff(path, base, commit)
    assert "+two" in diff
    manager.prepare("w1", base, "pd/run/t1")  # a reset: checkout and clean
    assert not (marks / "ran").exists(), (marks / "ran").read_text()
