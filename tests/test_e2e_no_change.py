"""An attempt that changes nothing is never reported merged (issue 9, item 1).

Two tasks write the same new file from the same base: one merges, the other conflicts.
Its retry runs on the new head and finishes without an edit (as when a scripted or real
edit no longer applies). Before the fix that retry was reported ``merged``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import finish_turn, pd, run_git, write_mission, write_turn
from tests.test_e2e import events

pytestmark = pytest.mark.slow


def finish_with(summary: str, **extra: str) -> dict:
    return {"tool_calls": [{"name": "finish", "input": {"summary": summary, **extra}}]}


def clashing_tasks(retry: list[dict], third: list[dict]) -> tuple[list[dict], dict]:
    """Tasks a and b write shared.txt at once; whichever loses replays ``retry`` next."""
    tasks = [{"id": tid, "title": f"task {tid}", "role": "backend-dev"} for tid in ("a", "b")]
    cassette = {
        tid: [[write_turn("shared.txt", f"{tid}\n"), finish_turn(tid)], retry, third]
        for tid in ("a", "b")
    }
    return tasks, cassette


def run(tmp_path: Path, project: Path, tasks: list[dict], cassette: dict) -> tuple[int, Path]:
    mission = write_mission(tmp_path / "m", tasks, cassette)
    home = tmp_path / "home"
    home.mkdir()
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
    return result.returncode, home


def loser(home: Path) -> str:
    rejected = [e["task"] for e in events(home) if e["kind"] == "task_rejected"]
    assert len(rejected) == 1, rejected
    return rejected[0]


def test_retry_that_changes_nothing_is_sent_back_not_merged(project: Path, tmp_path: Path) -> None:
    retry = [finish_with("done again")]  # the edit "did not apply": nothing changed
    tasks, cassette = clashing_tasks(retry, [write_turn("third.txt", "x\n"), finish_turn()])
    code, home = run(tmp_path, project, tasks, cassette)
    assert code == 0
    task = loser(home)
    failed = [e for e in events(home) if e["kind"] == "attempt_failed" and e["task"] == task]
    assert [e["attempt"] for e in failed] == [1, 2]  # the conflict, then the empty retry
    assert "without changing any file" in failed[1]["reason"]
    merged = [e for e in events(home) if e["kind"] == "task_merged" and e["task"] == task]
    assert [e["attempt"] for e in merged] == [3]
    assert "third.txt" in run_git(project, "ls-tree", "--name-only", "main").split()
    report = json.loads(pd("report", "--json", cwd=home, env={"PD_HOME": str(home)}).stdout)
    by_id = {t["id"]: t for t in report["tasks"]}
    assert by_id[task]["state"] == "merged" and by_id[task]["attempts"] == 3


def test_work_already_in_the_target_is_its_own_state(project: Path, tmp_path: Path) -> None:
    retry = [finish_with("the other task wrote it", already_in_target="main")]
    tasks, cassette = clashing_tasks(retry, [finish_turn()])
    code, home = run(tmp_path, project, tasks, cassette)
    assert code == 0
    task = loser(home)
    head = run_git(project, "rev-parse", "main")
    already = [e for e in events(home) if e["kind"] == "task_already_merged"]
    assert [(e["task"], e["commit"]) for e in already] == [(task, head)]
    assert not any(e["kind"] == "task_merged" and e["task"] == task for e in events(home))
    report = json.loads(pd("report", "--json", cwd=home, env={"PD_HOME": str(home)}).stdout)
    by_id = {t["id"]: t for t in report["tasks"]}
    assert by_id[task]["state"] == "already-merged"
    assert by_id[task]["already_in"] == head
    text = pd("report", cwd=home, env={"PD_HOME": str(home)}).stdout
    assert "already-merged" in text


def test_a_claim_naming_no_commit_of_the_target_is_refused(project: Path, tmp_path: Path) -> None:
    retry = [finish_with("it is there", already_in_target="no-such-branch")]
    tasks, cassette = clashing_tasks(retry, [write_turn("third.txt", "x\n"), finish_turn()])
    code, home = run(tmp_path, project, tasks, cassette)
    assert code == 0
    task = loser(home)
    failed = [e for e in events(home) if e["kind"] == "attempt_failed" and e["task"] == task]
    assert "'no-such-branch'" in failed[1]["reason"]
    assert not any(e["kind"] == "task_already_merged" for e in events(home))
