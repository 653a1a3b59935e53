"""The command provider against fake agent CLIs: real subprocesses, real pipes, no mocks.

Each fake in tests/fake_agents/ reads its argv like the real tool, edits done.txt in its
cwd and prints that tool's real output format; FAKE_MODE makes it fail, hang or stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from orchestrator.agent.external import (
    ADAPTERS,
    AiderAdapter,
    CommandAgentResult,
    run_command_agent,
)
from orchestrator.errors import ProviderError
from orchestrator.providers.base import Usage
from orchestrator.system import procs

FAKES = Path(__file__).resolve().parent / "fake_agents"
ROOT = FAKES.parent.parent
PROMPT = "# Task t1: write done.txt\n\nPut the task title in done.txt."


@dataclass
class Expected:
    summary: str
    usage: Usage
    cost: Decimal | None
    turns: int
    error: str


EXPECTED = {
    "claude": Expected(
        "Wrote done.txt with the task title.",
        Usage(input_tokens=12, output_tokens=345, cache_write_tokens=2048, cache_read_tokens=4096),
        Decimal("0.0123456"),
        3,
        "Invalid API key · Please run /login",
    ),
    "codex": Expected(
        "Created done.txt.",
        Usage(input_tokens=24763 - 24448, output_tokens=122, cache_read_tokens=24448),
        None,
        1,
        "unexpected status 401 Unauthorized: Incorrect API key provided",
    ),
    "aider": Expected(
        "I will create done.txt.\nApplied edit to done.txt\nWrote done.txt with the task title.",
        # 2.4k sent incl. 1.5k written, then 12k sent incl. 3.1k cache hits
        Usage(
            input_tokens=900 + 8900,
            output_tokens=215 + 987,
            cache_write_tokens=1500,
            cache_read_tokens=3100,
        ),
        Decimal("0.0197"),
        2,
        "AuthenticationError: AnthropicException - invalid x-api-key",
    ),
    "gemini": Expected(
        "Created done.txt with the task title.",
        Usage(
            input_tokens=(24939 - 21263) + 500,
            output_tokens=20 + 154 + 40 + 20,
            cache_read_tokens=21263,
        ),
        None,
        4,
        "[API Error: 400 API key not valid.]",
    ),
}


def fake(name: str) -> list[str]:
    return [sys.executable, str(FAKES / f"fake_{name}.py")]


def run(name: str, cwd: Path, timeout: float = 20, **kwargs) -> CommandAgentResult:
    env = kwargs.pop("env", {"FAKE_MODE": kwargs.pop("mode", "ok")})
    return run_command_agent(
        name, PROMPT, cwd=cwd, env=env, timeout=timeout, executable=fake(name), **kwargs
    )


def gone(pid: int) -> bool:
    """Dead or a zombie waiting for init (which some containers reap slowly)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, seconds: float = 60.0) -> bool:
    """Poll until ``pid`` is gone; the limit only ends a test that would hang."""
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


def test_registry_names_every_adapter() -> None:
    assert set(ADAPTERS) == {"claude", "codex", "aider", "gemini"}
    with pytest.raises(ProviderError, match="known: aider, claude, codex, gemini"):
        run_command_agent("cursor", PROMPT, cwd=ROOT, env={}, timeout=1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_agent_edits_the_worktree_and_usage_is_read_back(name: str, tmp_path: Path) -> None:
    records: list[dict] = []
    result = run(name, tmp_path, model="model-x", record=records.append)
    want = EXPECTED[name]
    assert result.finished, result.reason + "\n" + result.output_tail
    assert (tmp_path / "done.txt").read_text() == "# Task t1: write done.txt\n"
    assert result.summary == want.summary
    assert result.usage == want.usage
    assert result.cost_usd == want.cost
    assert result.turns == want.turns
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--model") + 1] == "model-x"
    assert records[0]["kind"] == "command" and "<prompt>" in records[0]["argv"]
    assert records[-1] == {"kind": "end", **result.to_dict(), "output_tail": result.output_tail}
    assert {r["kind"] for r in records[1:-1]} <= {"agent_event", "agent_output"}


@pytest.mark.parametrize("name", ["claude", "codex", "aider"])
def test_progress_arrives_while_the_agent_runs(name: str, tmp_path: Path) -> None:
    """The fake waits for a file that only on_line creates: batch reading would hang it."""
    go = tmp_path / "go"
    seen: list[str] = []

    def on_line(text: str) -> None:
        seen.append(text)
        go.touch()

    env = {"FAKE_MODE": "stream", "FAKE_GO": str(go)}
    result = run(name, tmp_path, env=env, on_line=on_line)
    assert result.finished, result.reason + "\n" + result.output_tail
    assert seen[0] == "Working on it."
    assert len(seen) > 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tool_error_fails_the_attempt_with_its_own_message(name: str, tmp_path: Path) -> None:
    result = run(name, tmp_path, mode="error")
    assert not result.finished
    assert result.reason.startswith(name)
    assert EXPECTED[name].error in result.reason
    assert result.summary == ""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_garbage_output_fails_cleanly(name: str, tmp_path: Path) -> None:
    result = run(name, tmp_path, mode="garbage")
    assert not result.finished
    assert "could not read its output" in result.reason
    assert "<<garbage>>" in result.output_tail


def test_crash_reports_exit_code_and_stderr(tmp_path: Path) -> None:
    result = run("claude", tmp_path, mode="crash")
    assert not result.finished
    assert result.reason == "claude exited with 7: boom: the fake crashed"
    assert "[stderr]\nboom" in result.output_tail


def test_missing_binary_is_a_reason_not_an_exception(tmp_path: Path) -> None:
    result = run_command_agent(
        "codex", PROMPT, cwd=tmp_path, env={}, timeout=5, executable=tmp_path / "no-codex"
    )
    assert not result.finished
    assert result.reason.startswith("codex: could not start")


def test_env_is_used_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_ONLY_IN_PARENT", "secret")
    result = run("claude", tmp_path, env={"FAKE_MODE": "env", "ANTHROPIC_API_KEY": "k-1"})
    assert result.finished, result.reason
    child_env = json.loads((tmp_path / "env.json").read_text())
    assert child_env["ANTHROPIC_API_KEY"] == "k-1"
    assert "PD_ONLY_IN_PARENT" not in child_env
    assert "PATH" not in child_env  # nothing merged in from our own environment


def test_should_stop_kills_the_whole_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    env = {"FAKE_MODE": "hang", "FAKE_PIDS": str(pids)}
    result = run("claude", tmp_path, env=env, should_stop=pids.exists)
    assert not result.finished and result.reason == "aborted"
    for pid in json.loads(pids.read_text()).values():
        assert wait_gone(pid), f"pid {pid} survived the abort"
    assert not procs._RUNNING


def test_timeout_kills_the_group_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids.json"
    env = {"FAKE_MODE": "hang", "FAKE_PIDS": str(pids), "FAKE_IGNORE_TERM": "1"}
    result = run("codex", tmp_path, env=env, timeout=1.0)
    assert not result.finished and result.reason == "timed out after 1s"
    for pid in json.loads(pids.read_text()).values():
        assert wait_gone(pid), f"pid {pid} survived the timeout"


def test_worker_shutdown_kills_a_running_agent(tmp_path: Path) -> None:
    """The worker's SIGTERM handler calls kill_all_running; the agent must be in it."""
    pids = tmp_path / "pids.json"
    env = {"FAKE_MODE": "hang", "FAKE_PIDS": str(pids)}
    box: list[CommandAgentResult] = []
    thread = threading.Thread(target=lambda: box.append(run("aider", tmp_path, env=env)))
    thread.start()
    deadline = time.monotonic() + 120
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    procs.kill_all_running(grace=0.5)
    thread.join(timeout=120)
    assert box and not box[0].finished
    assert box[0].reason == "aider was killed by SIGTERM"
    for pid in json.loads(pids.read_text()).values():
        assert wait_gone(pid)


def test_agent_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a worker killed with -9 leaves no agent behind."""
    pids = tmp_path / "pids.json"
    script = (
        "import sys; from pathlib import Path\n"
        "from orchestrator.agent.external import run_command_agent\n"
        f"run_command_agent('gemini', 'p', cwd=Path({str(tmp_path)!r}), timeout=60,\n"
        f"    env={{'FAKE_MODE': 'hang', 'FAKE_PIDS': {str(pids)!r}}},\n"
        f"    executable={fake('gemini')!r})\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not pids.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        agent = json.loads(pids.read_text())["agent"]
        worker.kill()
        worker.wait()
        assert wait_gone(agent), "the agent outlived its worker"
    finally:
        worker.kill()
        if pids.exists():  # the grandchild is not covered by PDEATHSIG; do not leak it
            for pid in json.loads(pids.read_text()).values():
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)


def test_stop_requested_before_start_runs_nothing(tmp_path: Path) -> None:
    result = run("claude", tmp_path, should_stop=lambda: True)
    assert result.reason == "aborted"
    assert not (tmp_path / "done.txt").exists()


def test_aider_reads_old_counts_and_colour() -> None:
    stdout = "\x1b[0mDone.\nTokens: 1,234 sent, 56 received. Cost: $0.01 request, $0.05 session.\n"
    result = AiderAdapter().parse(stdout)
    assert result.finished and result.summary == "Done."
    assert result.usage == Usage(input_tokens=1234, output_tokens=56)
    assert result.cost_usd == Decimal("0.05")
