"""The budget against real workers, the real SDK and the local API server: a worker killed
mid-call, and a provider that counts more input than pd reserved for."""

from __future__ import annotations

import json
import os
import signal
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest

from orchestrator.limits.client import estimate
from orchestrator.providers.base import ModelRequest
from orchestrator.testing.apiserver import LocalAPIServer, Reply
from tests.conftest import pd
from tests.test_e2e_api import MODEL, final_state, run, server_cost, writer

pytestmark = pytest.mark.slow


def events_of(home: Path) -> list[dict[str, Any]]:
    run_dir = sorted((home / ".pd" / "runs").iterdir())[-1]
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def caller_of(port: int) -> int:
    """The process (not this one) with a connection open to the server's port."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port and conn.pid and conn.pid != os.getpid():
            return conn.pid
    raise AssertionError(f"no process is connected to port {port}")


def test_a_worker_killed_mid_call_is_charged_and_the_report_matches_the_ledger(
    project: Path, tmp_path: Path
) -> None:
    budget = Decimal("0.1")
    held, release = threading.Event(), threading.Event()
    replies = writer()

    def hold_the_first(api: str, body: dict[str, Any]) -> Reply:
        if not held.is_set():
            held.set()
            release.wait()  # the test kills the caller, then lets the answer go nowhere
        return replies(api, body)

    outcome: list[Any] = []
    args = ("anthropic", "test-key", "--budget", str(budget), "--workers", "1")
    with LocalAPIServer(hold_the_first) as server:
        runner = threading.Thread(
            target=lambda: outcome.append(run(tmp_path, project, server, ["a", "b"], *args))
        )
        runner.start()
        try:
            held.wait()
            os.kill(caller_of(server.port), signal.SIGKILL)
        finally:
            release.set()
            runner.join()
    result, home = outcome[0]
    assert result.returncode == 0, result.stdout + result.stderr
    events = events_of(home)
    [lost] = [e for e in events if e["kind"] == "usage" and e.get("lost")]
    spend = final_state(home)["permits"]["spend"]
    served = server_cost(server, MODEL)  # every answer the server gave, the lost one too
    first = server_cost_of(server, 0)
    assert Decimal(lost["cost"]) >= first > 0  # charged at least what it served
    assert served <= Decimal(spend["spent"]) <= budget
    assert spend["lost"] == 1
    env = {"PD_HOME": str(home)}
    report = pd("report", "--json", cwd=home, env=env, check=True)
    total = json.loads(report.stdout)["spend"]["total"]
    assert Decimal(total["cost"]) == Decimal(spend["spent"]) and total["lost"] == 1
    text = pd("report", cwd=home, env=env, check=True).stdout
    assert "1 lost calls" in text and "charged at reservation" in text


def server_cost_of(server: LocalAPIServer, index: int) -> Decimal:
    """What the server billed for its ``index``-th request alone."""
    one = LocalAPIServer()
    one.requests = [server.calls[index]]
    return server_cost(one, MODEL)


def test_after_a_provider_counts_more_input_than_reserved_no_call_can_cross_the_budget(
    project: Path, tmp_path: Path
) -> None:
    budget = Decimal("0.15")
    replies = writer(turns_before_finish=10_000)  # never finishes: spends until stopped

    def padded(api: str, body: dict[str, Any]) -> Reply:
        reply = replies(api, body)
        reply.extra_input_tokens = 20_000  # far past any estimate of a ~2,000 token prompt
        return reply

    with LocalAPIServer(padded, output_mode="max") as server:
        result, home = run(
            tmp_path, project, server, ["a"], "anthropic", "test-key",
            "--budget", str(budget), "--workers", "1",
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    events = events_of(home)
    overruns = [e for e in events if e["kind"] == "budget_overrun"]
    # The first call overran: pd could not know. Every later one was reserved larger.
    assert len(overruns) == 1, overruns
    calls = [e for e in events if e["kind"] == "usage"]
    assert len(calls) > 2
    spent = Decimal(final_state(home)["permits"]["spend"]["spent"])
    assert spent == server_cost(server, MODEL)
    assert spent <= budget


def estimated(body: dict[str, Any]) -> int:
    """What pd's size estimate reserves for the input of the call ``body`` was sent as."""
    system = "".join(block["text"] for block in body.get("system") or [])
    tools = [{k: v for k, v in t.items() if k != "cache_control"} for t in body["tools"]]
    request = ModelRequest(system, body["messages"], tools, 1, MODEL, "", 0)
    return estimate(request)[1]


def prompt_billed(entry: dict[str, Any]) -> int:
    return entry["input_tokens"] + entry["cache_write"] + entry["cache_read"]


def spend_until_the_budget_is_gone(
    project: Path, tmp_path: Path, budget: Decimal, **server: Any
) -> tuple[Any, Path, LocalAPIServer]:
    """One task that never finishes, against a server that tokenizes a token per
    character: three times what pd's size estimate guesses for the same prompt."""
    replies = writer(turns_before_finish=10_000)
    with LocalAPIServer(replies, output_mode="max", chars_per_token=1.0, **server) as api:
        result, home = run(
            tmp_path, project, api, ["a"], "anthropic", "test-key",
            "--budget", str(budget), "--workers", "1",
        )  # fmt: skip
    return result, home, api


def test_calls_reserved_from_the_providers_count_never_overrun_the_budget(
    project: Path, tmp_path: Path
) -> None:
    budget = Decimal("0.15")
    result, home, server = spend_until_the_budget_is_gone(project, tmp_path, budget)
    assert result.returncode == 1, result.stdout + result.stderr
    events = events_of(home)
    assert [e for e in events if e["kind"] == "budget_overrun"] == []
    calls = server.calls
    counts = [r for r in server.requests if r["path"] == "/v1/messages/count_tokens"]
    assert len(calls) > 2 and all(r["status"] == 200 for r in counts)
    # A count per call, and one for the call the budget then refused.
    assert len(calls) <= len(counts) <= len(calls) + 1
    # Every call was billed more input than the estimate would have reserved for it.
    assert all(prompt_billed(c) > estimated(c["body"]) for c in calls)
    spent = Decimal(final_state(home)["permits"]["spend"]["spent"])
    assert spent == server_cost(server, MODEL)
    assert spent <= budget


def test_with_counting_failing_calls_go_through_on_the_estimate(
    project: Path, tmp_path: Path
) -> None:
    budget = Decimal("0.15")
    result, home, server = spend_until_the_budget_is_gone(
        project, tmp_path, budget, count_faults=lambda index, body: "500"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    calls = server.calls
    assert len(calls) > 2 and all(r["status"] == 200 for r in calls)
    counts = [r for r in server.requests if r["path"] == "/v1/messages/count_tokens"]
    assert counts and all(r["status"] == 500 for r in counts)
    # The estimate fell short of the dense count: the first call overran, as it can.
    overruns = [e for e in events_of(home) if e["kind"] == "budget_overrun"]
    assert len(overruns) == 1, overruns
    spent = Decimal(final_state(home)["permits"]["spend"]["spent"])
    assert spent == server_cost(server, MODEL)
    assert spent <= budget


def test_five_workers_killed_mid_call_never_take_spend_past_the_budget(
    project: Path, tmp_path: Path
) -> None:
    """The issue's measurement: one worker killed mid-call five times. Each lost call is
    charged at its reservation, so what pd counts is never below what the server served,
    never above the budget, and the report says the same."""
    kills = 5
    budget = Decimal("0.5")
    held = [threading.Event() for _ in range(kills)]
    release = [threading.Event() for _ in range(kills)]
    replies = writer()
    lock = threading.Lock()
    calls = [0]

    def hold_the_first_five(api: str, body: dict[str, Any]) -> Reply:
        with lock:
            index, calls[0] = calls[0], calls[0] + 1
        if index < kills:
            held[index].set()
            release[index].wait()  # the caller is killed meanwhile: the answer goes nowhere
        return replies(api, body)

    outcome: list[Any] = []
    args = ("anthropic", "test-key", "--budget", str(budget), "--workers", "1")
    tasks = ["a", "b", "c"]  # 3 attempts each: a fails after 3 kills, b after 2 goes on
    with LocalAPIServer(hold_the_first_five) as server:
        runner = threading.Thread(
            target=lambda: outcome.append(run(tmp_path, project, server, tasks, *args))
        )
        runner.start()
        try:
            for index in range(kills):
                held[index].wait()
                os.kill(caller_of(server.port), signal.SIGKILL)
                release[index].set()
        finally:
            for event in release:
                event.set()
            runner.join()
    result, home = outcome[0]
    spend = final_state(home)["permits"]["spend"]
    assert spend["lost"] == kills, result.stdout
    served = server_cost(server, MODEL)
    assert served <= Decimal(spend["spent"]) <= budget
    report = pd("report", "--json", cwd=home, env={"PD_HOME": str(home)}, check=True)
    total = json.loads(report.stdout)["spend"]["total"]
    assert Decimal(total["cost"]) == Decimal(spend["spent"]) and total["lost"] == kills
