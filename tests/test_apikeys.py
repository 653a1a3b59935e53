"""Issue 10: no pd process holds an API key in its environment; only the workers, which
make the model calls, hold the key, in memory, and hand it to the SDK client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine.apikeys import take_keys
from orchestrator.testing.apiserver import LocalAPIServer, Reply
from tests.conftest import shared_dir, wait_file, write_mission
from tests.test_e2e import run_dir, start_run, state, wait_for
from tests.test_e2e_api import MODEL, task_of

KEY = "sk-ant-issue10-only-in-workers-7f3a"
OTHER = "db-password-issue10-9c1e"


def holder(shared: Path) -> Any:
    """Each task marks that it is running, waits for the release file, writes its file."""

    def reply(api: str, body: dict[str, Any]) -> Reply:
        task = task_of(body)
        if not any(m["role"] == "assistant" for m in body["messages"]):
            wait = wait_file(shared / "release")
            command = f"touch '{shared}/running-{task}'; {wait}; echo {task} > {task}.txt"
            return Reply(tool_calls=[("run_command", {"command": command})])
        return Reply(tool_calls=[("finish", {"summary": f"{task} held"})])

    return reply


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.slow
def test_only_the_workers_hold_the_key_and_never_in_their_environment(
    project: Path, tmp_path: Path
) -> None:
    shared, sandbox = shared_dir(tmp_path)
    tasks = ["t1", "t2"]
    with LocalAPIServer(holder(shared), api_key=KEY) as server:
        mission = write_mission(
            tmp_path / "m",
            [{"id": t, "title": t} for t in tasks],
            {},
            provider={
                "name": "anthropic",
                "model": MODEL,
                "max_tokens": 1000,
                "base_url": server.url,
            },
            sandbox=sandbox,
        )
        home = tmp_path / "home"
        home.mkdir()
        env = {"ANTHROPIC_API_KEY": KEY, "DATABASE_PASSWORD": OTHER}
        proc = start_run(mission, project, home, env=env)
        try:
            for task in tasks:
                wait_for((shared / f"running-{task}").exists, what=f"{task} held")
            now = state(home)
            pids = {"coordinator": now["coordinator"]["pid"], "merger": now["merger"]["pid"]}
            pids |= {w["id"]: w["pid"] for w in now["workers"]}
            environs = {name: environ_of(pid) for name, pid in pids.items()}
        finally:
            (shared / "release").touch()
            output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output  # the workers' SDK calls carried the right key
    assert len(environs) == 4 and all(b"PATH=" in e for e in environs.values())
    for name, environ in environs.items():
        assert KEY.encode() not in environ, f"the key is in the environment of {name}"
        assert OTHER.encode() not in environ, f"a secret is in the environment of {name}"
    for path in [*run_dir(home).rglob("*"), *(home / "worktrees").rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"the key was written to {path}"


def test_take_keys_keeps_the_named_keys_and_drops_every_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.setenv("DATABASE_PASSWORD", OTHER)
    monkeypatch.setenv("PD_PLAIN", "kept")
    keys = take_keys(["ANTHROPIC_API_KEY"])
    assert keys == {"ANTHROPIC_API_KEY": KEY}
    gone = {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DATABASE_PASSWORD"} & set(os.environ)
    assert not gone and os.environ["PD_PLAIN"] == "kept"
