"""A failure of pd's own machinery is not the agent's attempt (issue 9, item 3).

git's worktree commands fail now and then under contention. Such a failure is retried
and reported as pd's, never counted against the task's attempts and never shown to the
model. The fault is injected with a ``git`` on PATH that fails the first
``worktree add`` the way git does, then steps aside for the real one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from orchestrator.engine.coordinator import Coordinator
from orchestrator.record import events as ev
from tests.conftest import finish_turn, pd, write_mission, write_turn
from tests.test_e2e import events, run_dir
from tests.test_group_commit import planned_run, run_here

pytestmark = pytest.mark.slow

GIT_SHIM = """#!/bin/sh
case "$*" in
  *"worktree add"*)
    if mkdir "{flag}" 2>/dev/null; then
      echo "fatal: failed to read .git/worktrees/w1/commondir: Success" >&2
      exit 128
    fi;;
esac
exec {git} "$@"
"""


def test_a_failed_worktree_add_is_retried_without_charging_the_agent(
    project: Path, tmp_path: Path
) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "git").write_text(
        GIT_SHIM.format(flag=tmp_path / "failed-once", git=shutil.which("git"))
    )
    (shim / "git").chmod(0o755)
    tasks = [{"id": "t1", "title": "task 1", "role": "backend-dev"}]
    cassette = {"t1": [[write_turn("t1.txt", "t1\n"), finish_turn()]] * 2}
    # One attempt allowed: the task can only merge if the broken one is not counted.
    mission = write_mission(tmp_path / "m", tasks, cassette, max_attempts=1)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home), "PATH": f"{shim}:{os.environ['PATH']}"}
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env)
    assert (tmp_path / "failed-once").is_dir()  # the fault did fire
    assert result.returncode == 0, result.stdout + result.stderr
    log = events(home)
    broken = [e for e in log if e["kind"] == "attempt_infra_failed"]
    assert [(e["task"], e["attempt"]) for e in broken] == [("t1", 1)]
    assert "commondir" in broken[0]["reason"]
    assert not [e for e in log if e["kind"] == "attempt_failed"]
    assert [e["attempt"] for e in log if e["kind"] == "task_merged"] == [2]
    transcripts = run_dir(home) / "transcripts" / "t1"
    assert "commondir" not in (transcripts / "2.jsonl").read_text()
    report = pd("report", cwd=home, env=env).stdout
    assert "infrastructure" in report


UPDATE_REF_SHIM = """#!/bin/sh
case "$*" in
  *"update-ref -m pd: merge"*)
    if mkdir "{flag}" 2>/dev/null; then
      echo "fatal: cannot lock ref 'refs/heads/main': No space left on device" >&2
      exit 128
    fi;;
esac
exec {git} "$@"
"""


def test_a_merger_failure_of_its_own_is_retried_not_charged(project: Path, tmp_path: Path) -> None:
    shim = tmp_path / "bin"
    shim.mkdir()
    flag = tmp_path / "failed-once"
    (shim / "git").write_text(UPDATE_REF_SHIM.format(flag=flag, git=shutil.which("git")))
    (shim / "git").chmod(0o755)
    tasks = [{"id": "t1", "title": "task 1", "role": "backend-dev"}]
    cassette = {"t1": [[write_turn("t1.txt", "t1\n"), finish_turn()]]}
    mission = write_mission(tmp_path / "m", tasks, cassette, max_attempts=1)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home), "PATH": f"{shim}:{os.environ['PATH']}"}
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env)
    assert flag.is_dir()  # the fault did fire
    assert result.returncode == 0, result.stdout + result.stderr
    log = events(home)
    broken = [e for e in log if e["kind"] == "attempt_infra_failed"]
    assert [(e["task"], e["state"], e.get("merger")) for e in broken] == [("t1", "merging", True)]
    assert not [e for e in log if e["kind"] in ("attempt_failed", "task_rejected")]
    assert [e["attempt"] for e in log if e["kind"] == "task_merged"] == [1]


def test_a_file_of_pds_own_the_worker_cannot_write_is_not_charged_to_the_agent(
    project: Path, tmp_path: Path
) -> None:
    """The attempt's transcript cannot be opened (a directory is in its way, as a full
    disk or a bad permission would stop it): pd's failure, retried without charging the
    agent. One attempt allowed: the task can only merge if the broken one is not counted."""
    cassette = {"t1": [[write_turn("t1.txt", "x\n"), finish_turn()]] * 2}
    tasks = [{"id": "t1", "title": "task 1"}]
    plan, store = planned_run(tmp_path, project, tasks, cassette, max_attempts=1)
    (store.transcript_path("t1", 1) / "in-the-way").mkdir(parents=True)

    assert run_here(Coordinator(plan, store)) == 0
    recorded = list(store.events())
    broke = [e for e in recorded if isinstance(e, ev.AttemptInfraFailed)]
    assert [(e.task, e.attempt) for e in broke] == [("t1", 1)]
    assert "1.jsonl" in broke[0].reason
    assert not [e for e in recorded if isinstance(e, ev.AttemptFailed)]  # never charged
    assert [e.attempt for e in recorded if isinstance(e, ev.TaskMerged)] == [2]
