"""Handoffs: an attempt that cannot finish leaves the next one a note and its work."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.testing.apiserver import LocalAPIServer, Reply
from tests.conftest import finish_turn, hold_turn, pd, run_git, write_mission, write_turn
from tests.test_e2e import events, start_run, state, wait_for

pytestmark = pytest.mark.slow
NOTE = "Handoff note from the previous attempt"


def prompt_of(body: dict[str, Any]) -> str:
    return json.dumps(body["messages"][0]["content"])


def test_a_worker_killed_mid_task_leaves_a_note_the_next_attempts_first_request_has(
    project: Path, tmp_path: Path
) -> None:
    killed, hanging = threading.Event(), threading.Event()

    def reply(api: str, body: dict[str, Any]) -> Reply:
        if NOTE in prompt_of(body):
            return Reply(tool_calls=[("finish", {"summary": "finished from the note"})])
        turns = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if turns == 0:
            return Reply(
                text="I will write notes.txt, then the parser.",
                tool_calls=[("write_file", {"path": "notes.txt", "content": "half done\n"})],
            )
        hanging.set()
        killed.wait(30)  # the second turn hangs until the test has killed the worker
        return Reply(tool_calls=[("finish", {"summary": "too late"})])

    with LocalAPIServer(reply) as server:
        mission = write_mission(
            tmp_path / "m",
            [{"id": "parse", "title": "Write the parser"}],
            {},
            team=[{"role": "backend-dev"}],
            provider={"name": "anthropic", "model": "claude-haiku-4-5", "base_url": server.url},
        )
        home = tmp_path / "home"
        home.mkdir()
        env = {"ANTHROPIC_API_KEY": "test-key"}
        proc = start_run(mission, project, home, env=env)
        wait_for(hanging.is_set, what="the attempt's second call")
        pid = wait_for(
            lambda: next((w["pid"] for w in state(home)["workers"] if w["task"] == "parse"), 0),
            what="the worker's pid",
        )
        os.kill(pid, signal.SIGKILL)
        killed.set()
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    second = [e["body"] for e in server.calls if NOTE in prompt_of(e["body"])]
    assert second, "no request carried the handoff note"
    first_prompt = prompt_of(second[0])
    assert "notes.txt" in first_prompt and "I will write notes.txt" in first_prompt
    crashed = [e for e in events(home) if e["kind"] == "attempt_failed"]
    assert crashed and "notes.txt" in crashed[0]["handoff"]


def test_pd_handoff_commits_the_work_in_progress_and_a_fresh_start_goes_on_from_it(
    project: Path, tmp_path: Path
) -> None:
    cassette = {
        "big": [
            [
                write_turn("wip.txt", "started\n"),
                hold_turn(),  # the handoff arrives meanwhile
                finish_turn("never reached"),
            ],
            [finish_turn("finished what the first attempt began")],
        ]
    }
    tasks = [{"id": "big", "title": "A big job", "max_attempts": 1}]
    mission = write_mission(tmp_path / "m", tasks, cassette, team=[{"role": "backend-dev"}])
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    worker = wait_for(
        lambda: next((w["id"] for w in state(home).get("workers", []) if w["task"]), None),
        what="big running",
    )
    wait_for(lambda: any(e.get("kind") == "task_started" for e in events(home)), what="started")
    result = pd("handoff", "--worker", worker, cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output  # the handed-off attempt did not use up max_attempts
    kinds = [e["kind"] for e in events(home)]
    assert "attempt_handed_off" in kinds and "worker_respawned" in kinds
    handed = next(e for e in events(home) if e["kind"] == "attempt_handed_off")
    assert "wip.txt" in handed["handoff"]
    # the second attempt wrote nothing: wip.txt reached main because it started from the
    # work in progress the handoff committed
    assert "wip.txt" in run_git(project, "ls-tree", "--name-only", "main").split()
    assert run_git(project, "merge-base", "--is-ancestor", handed["commit"], "main") == ""


def test_pd_handoff_of_a_run_that_is_not_running_is_one_line_exit_2(tmp_path: Path) -> None:
    result = pd("handoff", "--worker", "w1", cwd=tmp_path, env={"PD_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "pd run" in result.stderr
