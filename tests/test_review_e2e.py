"""Review end to end: a tech-lead reviews a builder's work through the real anthropic SDK
against the local API server; requested changes reach the implementer's next attempt,
the second version is approved and merged. Also a run killed mid-review, resumed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.testing.apiserver import LocalAPIServer, Reply
from tests.conftest import IDENTITY, pd, run_git, write_mission
from tests.test_e2e import events, no_processes_left, run_dir, state, wait_for

pytestmark = pytest.mark.slow
MODEL = "claude-haiku-4-5"
MARKER = "PD-REVIEW-7f3a: rename greet() to hello() in feat.py"


def text_of(body: dict[str, Any]) -> str:
    """Every message of the request as one string (the prompt and the tool results)."""
    return json.dumps(body["messages"])


def first_prompt(body: dict[str, Any]) -> str:
    content = body["messages"][0]["content"]
    return content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)


def is_review(body: dict[str, Any]) -> bool:
    return any(tool["name"] == "submit_review" for tool in body.get("tools", []))


def turns(body: dict[str, Any]) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "assistant")


class Team:
    """Scripted model answers: the builder writes feat.py (fixing it once the review's
    comment is in its prompt); the reviewer asks for changes in round 1, then approves."""

    def __init__(self, hold_first_review: threading.Event | None = None) -> None:
        self.hold = hold_first_review
        self.review_arrived = threading.Event()
        self.reviews = 0

    def __call__(self, api: str, body: dict[str, Any]) -> Reply:
        if is_review(body):
            return self.review(body)
        if turns(body) == 0:
            fixed = MARKER in first_prompt(body)
            content = "def hello():\n    return 1\n" if fixed else "def greet():\n    return 1\n"
            return Reply(tool_calls=[("write_file", {"path": "feat.py", "content": content})])
        return Reply(tool_calls=[("finish", {"summary": "feat.py has the function"})])

    def review(self, body: dict[str, Any]) -> Reply:
        round_ = int(re.search(r"\(round (\d+)\)", first_prompt(body)).group(1))
        if turns(body) == 0:
            self.reviews += 1
            self.review_arrived.set()
            if self.hold is not None and not self.hold.is_set():
                self.hold.wait(60)  # the run is killed while this review is open
            return Reply(tool_calls=[("read_file", {"path": "feat.py"})])
        if "def greet" in text_of(body) and round_ == 1:
            verdict = {"verdict": "request_changes", "comments": f"1. must: {MARKER}"}
        else:
            verdict = {"verdict": "approve", "comments": "looks right"}
        return Reply(tool_calls=[("submit_review", verdict)])


def review_mission(tmp_path: Path, server: LocalAPIServer, **fields: Any) -> Path:
    return write_mission(
        tmp_path / "m",
        [{"id": "feat", "title": "Add the feature function", "role": "backend-dev"}],
        {},
        **{
            "team": [{"role": "backend-dev"}, {"role": "tech-lead"}],
            "review": True,
            "provider": {
                "name": "anthropic",
                "model": MODEL,
                "max_tokens": 1000,
                "base_url": server.url,
            },
            **fields,
        },
    )


def env_for(home: Path) -> dict[str, str]:
    return {"PD_HOME": str(home), "ANTHROPIC_API_KEY": "test-key", "OPENAI_API_KEY": ""}


def builder_first_requests(server: LocalAPIServer) -> list[dict[str, Any]]:
    """The first request of each of the builder's attempts, in order."""
    return [
        e["body"]
        for e in server.calls
        if e["status"] == 200 and not is_review(e["body"]) and turns(e["body"]) == 0
    ]


def test_requested_changes_reach_the_implementer_and_the_fix_merges(
    project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with LocalAPIServer(Team()) as server:
        mission = review_mission(tmp_path, server)
        result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env_for(home))
    assert result.returncode == 0, result.stdout + result.stderr

    firsts = builder_first_requests(server)
    assert len(firsts) == 2
    assert MARKER not in first_prompt(firsts[0])
    assert MARKER in first_prompt(firsts[1])  # the reviewer's comment, in the next prompt
    reviews = [e["body"] for e in server.calls if is_review(e["body"]) and turns(e["body"]) == 0]
    assert len(reviews) == 2
    assert "+def greet" in first_prompt(reviews[0])  # the reviewer saw the diff
    assert "+def hello" in first_prompt(reviews[1]) and MARKER in first_prompt(reviews[1])

    assert run_git(project, "show", "main:feat.py") == "def hello():\n    return 1"
    log = events(home)
    done = [(e["round"], e["verdict"], e["worker"]) for e in log if e["kind"] == "review_done"]
    assert done == [(1, "request_changes", "w2"), (2, "approve", "w2")]
    assert all(e["worker"] == "w1" for e in log if e["kind"] == "task_assigned")
    # The fix built on the reviewed commit: the reviewed version is the fix's parent.
    reviewed = next(e["commit"] for e in log if e["kind"] == "review_done")
    approved = [e["commit"] for e in log if e["kind"] == "review_done"][1]
    assert run_git(project, "rev-parse", f"{approved}^") == reviewed
    merged = [e for e in log if e["kind"] == "task_merged"]
    assert len(merged) == 1 and merged[0]["attempt"] == 2
    kinds = [e["kind"] for e in log]
    assert kinds.index("task_merged") > max(i for i, k in enumerate(kinds) if k == "review_done")

    env = {"PD_HOME": str(home), "COLUMNS": "200"}  # rich wraps narrower tables
    report = json.loads(pd("report", "--json", cwd=home, env=env, check=True).stdout)
    task = report["tasks"][0]
    assert [r["verdict"] for r in task["reviews"]] == ["request_changes", "approve"]
    assert task["attempts"] == 2 and task["state"] == "merged"
    reviewing = {r["skill"]: r for r in report["skills"] if r["kind"] == "review"}
    assert reviewing["git_diff"]["offered"] == 2 and "write_file" not in reviewing
    assert "changes requested" in pd("report", cwd=home, env=env, check=True).stdout
    logs = pd("logs", cwd=home, env=env, check=True).stdout
    assert "review of feat round 1: changes requested" in logs
    assert "review of feat round 2: approved" in logs
    status = pd("status", cwd=home, env=env, check=True).stdout
    assert "2 rounds, last: approved" in status


def test_a_run_killed_mid_review_resumes_and_reviews_again(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    hold = threading.Event()
    team = Team(hold_first_review=hold)
    with LocalAPIServer(team) as server:
        mission = review_mission(tmp_path, server, max_review_rounds=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", str(mission), "--repo", str(project)],
            cwd=home,
            env={**os.environ, **IDENTITY, **env_for(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert team.review_arrived.wait(60), "no review request arrived"
            wait_for(lambda: any(t["state"] == "reviewing" for t in state(home).get("tasks", [])))
            workers = [w for w in state(home)["workers"] if w["pid"]]
            proc.kill()
            proc.wait(10)
        finally:
            hold.set()
        assert wait_for(lambda: no_processes_left(workers), what="workers gone")
        assert run_git(project, "ls-tree", "--name-only", "main").split() == [
            "README.md",
            "check.sh",
        ]
        result = pd("resume", run_dir(home).name, cwd=home, env=env_for(home), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(builder_first_requests(server)) == 2  # the work was not redone on resume
    log = events(home)
    started = [e["round"] for e in log if e["kind"] == "review_started"]
    assert started[:2] == [1, 1]  # the review that was open is done again
    done = [(e["round"], e["verdict"]) for e in log if e["kind"] == "review_done"]
    assert done == [(1, "request_changes")]
    assert any(e["kind"] == "review_rounds_exhausted" for e in log)
    assert run_git(project, "show", "main:feat.py") == "def hello():\n    return 1"


def test_a_review_without_a_verdict_goes_to_another_reviewer(project: Path, tmp_path: Path) -> None:
    first: list[str] = []  # the system prompt of whichever reviewer is asked first

    def reply(api: str, body: dict[str, Any]) -> Reply:
        if not is_review(body):
            return Team()(api, body)
        first[:] = first or [json.dumps(body.get("system"))]
        if json.dumps(body.get("system")) == first[0]:
            return Reply(text="Let me think about it.")  # never a verdict, never a tool
        return Reply(tool_calls=[("submit_review", {"verdict": "approve", "comments": "ok"})])

    home = tmp_path / "home"
    home.mkdir()
    with LocalAPIServer(reply) as server:
        mission = review_mission(
            tmp_path,
            server,
            team=[{"role": "backend-dev"}, {"role": "tech-lead"}, {"role": "code-reviewer"}],
            limits={"max_turns": 3},
        )
        result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env_for(home))
    assert result.returncode == 0, result.stdout + result.stderr
    log = events(home)
    failed = [e for e in log if e["kind"] == "review_failed"]
    # The reviewer asked first never gives a verdict; the other one (waited for, if it was
    # still booting) then reviews the same round.
    assert [(e["round"], e["state"]) for e in failed] == [(1, "reviewing")]
    assert "3 turns in a row without calling a tool" in failed[0]["reason"]
    started = [(e["worker"], e["round"]) for e in log if e["kind"] == "review_started"]
    other = ({"w2", "w3"} - {failed[0]["worker"]}).pop()
    assert started == [(failed[0]["worker"], 1), (other, 1)]
    done = [(e["worker"], e["verdict"]) for e in log if e["kind"] == "review_done"]
    assert done == [(other, "approve")]
    assert len(builder_first_requests(server)) == 1  # a lost review is not a failed attempt
    assert "feat.py" in run_git(project, "ls-tree", "--name-only", "main").split()
