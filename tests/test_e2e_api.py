"""Real providers end to end: pd's workers drive the real anthropic and openai SDKs
against the local API server, through the shared limiter and ledger."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.limits.ledger import PriceTable, cost
from orchestrator.providers.base import Usage
from orchestrator.testing.apiserver import Fault, LocalAPIServer, Reply
from tests.conftest import CHECK_SH, make_repo, pd, run_git, write_mission

pytestmark = pytest.mark.slow
MODEL = "claude-haiku-4-5"


def task_of(body: dict[str, Any]) -> str:
    """The task id, read from the prompt pd wrote ("# Task <id>: ...")."""
    for message in body["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else json.dumps(content)
        if found := re.search(r"# Task (\S+):", text):
            return found.group(1)
    raise AssertionError("no task in the prompt")


def writer(turns_before_finish: int = 1) -> Any:
    """Each task writes <task>.txt, then finishes (or never, with a huge count)."""

    def reply(api: str, body: dict[str, Any]) -> Reply:
        task = task_of(body)
        done = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if done < turns_before_finish:
            return Reply(
                tool_calls=[("write_file", {"path": f"{task}.txt", "content": f"{task} {done}\n"})]
            )
        return Reply(tool_calls=[("finish", {"summary": f"{task} written"})])

    return reply


def run(
    tmp_path: Path,
    project: Path,
    server: LocalAPIServer,
    tasks: list[str],
    provider: str = "anthropic",
    key: str | None = "test-key",
    *extra: str,
    **fields: Any,
) -> tuple[Any, Path]:
    url = server.url + ("/v1" if provider == "openai" else "")
    model = MODEL if provider == "anthropic" else "gpt-4.1-mini"
    mission = write_mission(
        tmp_path / "m",
        [{"id": t, "title": t} for t in tasks],
        {},
        provider={"name": provider, "model": model, "max_tokens": 1000, "base_url": url},
        **fields,
    )
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PD_HOME": str(home), "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""}
    env[f"{provider.upper()}_API_KEY"] = key or ""
    result = pd("run", str(mission), "--repo", str(project), *extra, cwd=home, env=env, timeout=180)
    return result, home


def final_state(home: Path) -> dict[str, Any]:
    run_dir = sorted((home / ".pd" / "runs").iterdir())[-1]
    return json.loads((run_dir / "state.json").read_text())


def server_cost(server: LocalAPIServer, model: str) -> Decimal:
    price = PriceTable.load().price(model)
    total = Decimal(0)
    for entry in server.calls:
        if entry["status"] == 200:
            total += cost(
                Usage(
                    entry["input_tokens"],
                    entry["output_tokens"],
                    entry["cache_write"],
                    entry["cache_read"],
                ),
                price,
            )
    return total


TASKS = ["a", "b", "c"]


@dataclass
class Done:
    """A finished run against the local API server, for tests to read."""

    result: Any
    home: Path
    project: Path
    server: LocalAPIServer
    mission: Path


@pytest.fixture(scope="module")
def anthropic_run(tmp_path_factory: pytest.TempPathFactory) -> Done:
    """One recorded anthropic run of tasks a, b and c that each write a file, shared by
    the tests that check different things of that same run (the ledger, the skills
    offered, the cassette): pd's start-up with the SDK is most of each such test."""
    root = tmp_path_factory.mktemp("anthropic-run")
    project = make_repo(root / "project", {"check.sh": CHECK_SH, "README.md": "project\n"})
    with LocalAPIServer(writer()) as server:
        result, home = run(root, project, server, TASKS, "anthropic", "test-key", "--record")
    return Done(result, home, project, server, root / "m" / "mission.json")


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_tasks_complete_and_the_ledger_matches_the_server(
    provider: str, project: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if provider == "anthropic":
        done: Done = request.getfixturevalue("anthropic_run")
        result, home, project, server = done.result, done.home, done.project, done.server
    else:
        with LocalAPIServer(writer()) as server:
            result, home = run(tmp_path, project, server, TASKS, provider)
    assert result.returncode == 0, result.stdout + result.stderr
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"a.txt", "b.txt", "c.txt"} <= set(tree)
    spend = final_state(home)["permits"]["spend"]
    model = MODEL if provider == "anthropic" else "gpt-4.1-mini"
    assert Decimal(spend["spent"]) == server_cost(server, model) > 0
    assert spend["run"]["calls"] == sum(e["status"] == 200 for e in server.calls)
    assert set(spend["task"]) == {"a", "b", "c"}
    env = {"PD_HOME": str(home)}
    report = json.loads(pd("report", "--json", cwd=home, env=env, check=True).stdout)
    assert Decimal(report["spend"]["total"]["cost"]) == Decimal(spend["spent"])
    assert report["spend"]["total"]["calls"] == spend["run"]["calls"]
    assert f"spent ${spend['spent']}" in pd("status", cwd=home, env=env, check=True).stdout
    run_dir = sorted((home / ".pd" / "runs").iterdir())[-1]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rtts = [e["permit_rtt"] for e in events if e["kind"] == "usage"]
    assert rtts and all(isinstance(r, float) and 0 <= r < 5 for r in rtts)


def test_budget_holds_and_the_run_stops_cleanly(project: Path, tmp_path: Path) -> None:
    budget = Decimal("0.03")
    with LocalAPIServer(writer(turns_before_finish=10_000), output_mode="max") as server:
        result, home = run(
            tmp_path, project, server, ["a", "b"], "anthropic", "test-key", "--budget", str(budget)
        )
    assert result.returncode == 1, result.stdout + result.stderr
    state = final_state(home)
    assert state["status"] == "budget exhausted"
    spent = Decimal(state["permits"]["spend"]["spent"])
    assert spent == server_cost(server, MODEL)
    assert 0 < spent <= budget
    assert "budget exhausted" in result.stdout


def test_a_storm_of_429s_pauses_everyone_and_every_task_completes(
    project: Path, tmp_path: Path
) -> None:
    retry_after = 1.0  # the least the real APIs send (whole seconds), and pd honours it

    def storm(index: int, api: str, body: dict[str, Any]) -> Fault | None:
        # Each 429 pauses every worker for its retry-after: a storm of the first few
        # calls, not of every third call to the end, says as much in a fraction of it.
        return Fault("429", retry_after=retry_after) if index in (1, 2, 3) else None

    with LocalAPIServer(writer(), faults=storm) as server:
        result, _ = run(tmp_path, project, server, ["a", "b", "c", "d"])
    assert result.returncode == 0, result.stdout + result.stderr
    log = server.calls
    limited = [e for e in log if e["status"] == 429]
    assert limited
    # Every 429 was survived: each call it refused was made again and answered. (That
    # the pause holds every worker back until retry-after is the desk's, tested without
    # a clock in test_permitdesk; arrival times here would only measure the machine.)
    assert sum(e["status"] == 200 for e in log) >= len(limited)


def test_missing_key_is_one_line_exit_2(project: Path, tmp_path: Path) -> None:
    with LocalAPIServer(writer()) as server:
        result, home = run(tmp_path, project, server, ["a"], "anthropic", None)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ANTHROPIC_API_KEY is not set" in lines[0]
    assert not server.requests and not (home / ".pd").exists()


def test_unknown_model_fails_closed(project: Path, tmp_path: Path) -> None:
    mission = write_mission(
        tmp_path / "m",
        [{"id": "a", "title": "a"}],
        {},
        provider={"name": "anthropic", "model": "claude-imaginary-9"},
    )
    result = pd(
        "run",
        str(mission),
        "--repo",
        str(project),
        cwd=tmp_path,
        env={"ANTHROPIC_API_KEY": "k", "PD_HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'claude-imaginary-9'" in lines[0]
    assert "Traceback" not in result.stderr


def test_wrong_key_stops_the_run_with_the_providers_message(project: Path, tmp_path: Path) -> None:
    with LocalAPIServer(writer(), api_key="the-right-key") as server:
        result, home = run(tmp_path, project, server, ["a", "b", "c"], "anthropic", "wrong")
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "401" in out and "Traceback" not in out
    assert final_state(home)["status"] == "stopped"
    assert len(server.calls) <= 2  # one per worker at most: no retry of a bad key


def test_record_then_replay_offline(anthropic_run: Done, tmp_path: Path) -> None:
    result, home, project = anthropic_run.result, anthropic_run.home, anthropic_run.project
    assert result.returncode == 0, result.stdout + result.stderr
    cassette = sorted((home / ".pd" / "runs").iterdir())[-1] / "recorded.cassette.json"
    recorded = json.loads(cassette.read_text())
    assert set(recorded["tasks"]) == set(TASKS)

    replay_repo = tmp_path / "replay"
    run_git(tmp_path, "clone", "-q", str(project), str(replay_repo))
    run_git(replay_repo, "reset", "-q", "--hard", "HEAD~0")
    first = run_git(project, "rev-list", "--max-parents=0", "main")
    run_git(replay_repo, "reset", "-q", "--hard", first)
    mission = anthropic_run.mission
    again = pd(
        "run",
        str(mission),
        "--repo",
        str(replay_repo),
        "--provider",
        "scripted",
        "--cassette",
        str(cassette),
        cwd=tmp_path,
        env={"PD_HOME": str(tmp_path / "h2")},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    tree = run_git(replay_repo, "ls-tree", "--name-only", "HEAD").split()
    assert {f"{t}.txt" for t in TASKS} <= set(tree)


def test_api_keys_never_reach_logs_transcripts_or_agent_commands(
    project: Path, tmp_path: Path
) -> None:
    secret = "sk-ant-secret-4242"

    def reply(api: str, body: dict[str, Any]) -> Reply:
        if sum(1 for m in body["messages"] if m["role"] == "assistant") == 0:
            return Reply(tool_calls=[("run_command", {"command": "env > env.txt"})])
        return Reply(tool_calls=[("finish", {"summary": "looked around"})])

    with LocalAPIServer(reply, api_key=secret) as server:
        result, home = run(tmp_path, project, server, ["a"], "anthropic", secret)
    assert result.returncode == 0, result.stdout + result.stderr
    seen_env = run_git(project, "show", "main:env.txt")
    assert "PD_WORKER_ID=" in seen_env and secret not in seen_env
    for path in (home / ".pd").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_spend_limit_is_not_retried(project: Path, tmp_path: Path) -> None:
    with LocalAPIServer(writer(), faults=lambda i, api, body: Fault("spend_limit")) as server:
        result, home = run(tmp_path, project, server, ["a"])
    assert result.returncode == 1
    assert len(server.calls) == 1
    assert final_state(home)["status"] == "stopped"


def test_overload_server_errors_and_malformed_replies_are_retried(
    project: Path, tmp_path: Path
) -> None:
    # Each fault hits a different call, so each is its call's first retry and waits one
    # short back-off; back-offs that grow over retries of one call are test_retries'.
    slow = Fault("slow", delay=0.3)
    faults = [None, Fault("529"), None, Fault("500"), slow, Fault("malformed"), None]
    with LocalAPIServer(writer(), faults=faults) as server:
        result, _ = run(
            tmp_path, project, server, ["a", "b"], "anthropic", "test-key", "--workers", "1"
        )
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = [e["status"] for e in server.calls]
    assert [statuses[1], statuses[3]] == [529, 500] and statuses.count(200) >= 4
    # Two tasks of two calls each: every fault cost exactly one call more, its retry.
    assert len(server.calls) == 4 + 3


def test_an_answer_cut_off_is_retried_once_and_what_it_carried_reaches_the_ledger(
    project: Path, tmp_path: Path
) -> None:
    faults = [None, Fault("malformed")]
    with LocalAPIServer(writer(), faults=faults) as server:
        result, home = run(tmp_path, project, server, ["a"], "anthropic", "test-key")
    assert result.returncode == 0, result.stdout + result.stderr
    cut = server.calls[1]
    assert cut["fault"] == "malformed" and [e["status"] for e in server.calls] == [200] * 3
    # The cut stream reported its input (message_start) and one output token: billed.
    price = PriceTable.load().price(MODEL)
    unread = cost(Usage(output_tokens=cut["output_tokens"] - 1), price)
    spend = final_state(home)["permits"]["spend"]
    assert Decimal(spend["spent"]) == server_cost(server, MODEL) - unread > 0
    assert spend["run"]["calls"] == 3


def test_command_provider_runs_an_agent_cli_as_the_agent(project: Path, tmp_path: Path) -> None:
    fake = Path(__file__).parent / "fake_agents" / "fake_claude.py"
    tasks = [{"id": "a", "title": "a"}, {"id": "b", "title": "b", "deps": ["a"]}]
    provider = {"name": "command", "agent": "claude", "executable": [sys.executable, str(fake)]}
    sandbox = {"pass_env": ["FAKE_MODE"]}  # the fake's switch; its key passes on its own
    mission = write_mission(tmp_path / "m", tasks, {}, provider=provider, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PD_HOME": str(home),
        "FAKE_MODE": "env",
        "ANTHROPIC_API_KEY": "for-claude",
        "OPENAI_API_KEY": "not-for-claude",
    }
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(run_git(project, "show", "main:env.json"))
    assert seen["ANTHROPIC_API_KEY"] == "for-claude" and "OPENAI_API_KEY" not in seen
    assert seen["HOME"] == "/tmp/home" and "PD_HOME" not in seen  # inside the sandbox
    report = json.loads(pd("report", "--json", cwd=home, env=env, check=True).stdout)
    assert report["spend"]["total"]["calls"] == 2
    assert report["spend"]["total"]["output_tokens"] > 0


def test_command_agents_stop_getting_work_once_their_reported_cost_reaches_the_budget(
    project: Path, tmp_path: Path
) -> None:
    fake = Path(__file__).parent / "fake_agents" / "fake_claude.py"
    tasks = [{"id": "a", "title": "a"}, {"id": "b", "title": "b", "deps": ["a"]}]
    provider = {"name": "command", "agent": "claude", "executable": [sys.executable, str(fake)]}
    mission = write_mission(tmp_path / "m", tasks, {}, provider=provider, budget="0.000001")
    home = tmp_path / "home"
    home.mkdir()
    result = pd(
        "run",
        str(mission),
        "--repo",
        str(project),
        cwd=home,
        env={"PD_HOME": str(home), "ANTHROPIC_API_KEY": "k"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert final_state(home)["status"] == "budget exhausted"
    states = {t["id"]: t["state"] for t in final_state(home)["tasks"]}
    assert states == {"a": "merged", "b": "aborted"}  # finished work still merged


def test_each_attempt_is_offered_its_chosen_skills_and_the_report_counts_their_use(
    anthropic_run: Done,
) -> None:
    from orchestrator.team.roles import load_roles

    result, home, server = anthropic_run.result, anthropic_run.home, anthropic_run.server
    assert result.returncode == 0, result.stdout + result.stderr
    core = set(load_roles()["backend-dev"].skills)
    builtin = {"finish", "discover_skills"}
    for entry in server.calls:
        names = {tool["name"] for tool in entry["body"]["tools"]}
        assert core | builtin <= names and 3 <= len(names - builtin) <= 8
    report = json.loads(pd("report", "--json", cwd=home, env={"PD_HOME": str(home)}).stdout)
    rows = {(r["role"], r["kind"], r["skill"]): r for r in report["skills"]}
    assert rows[("backend-dev", "task", "write_file")] == {
        "role": "backend-dev", "kind": "task", "skill": "write_file", "offered": 3, "used": 3,
    }  # fmt: skip
    assert rows[("backend-dev", "task", "read_file")]["used"] == 0


def test_a_critical_task_runs_on_the_top_tier_and_the_others_on_their_roles_tier(
    project: Path, tmp_path: Path
) -> None:
    from orchestrator.team.tiers import resolve_model

    with LocalAPIServer(writer()) as server:
        url = server.url
        mission = write_mission(
            tmp_path / "m",
            [{"id": "a", "title": "a", "critical": True}, {"id": "b", "title": "b"}],
            {},
            provider={"name": "anthropic", "max_tokens": 1000, "base_url": url},
        )
        home = tmp_path / "home"
        home.mkdir()
        env = {"PD_HOME": str(home), "ANTHROPIC_API_KEY": "test-key"}
        result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    models = {(task_of(e["body"]), e["body"]["model"]) for e in server.calls}
    assert models == {
        ("a", resolve_model("anthropic", "opus")),
        ("b", resolve_model("anthropic", "sonnet")),  # backend-dev's tier
    }


# ---- planning ------------------------------------------------------------------------

CYCLIC_PLAN = [
    {"id": "a", "title": "Write a", "role": "backend-dev", "deps": ["b"], "files": ["a.txt"]},
    {"id": "b", "title": "Write b", "role": "backend-dev", "deps": ["a"], "files": ["b.txt"]},
    {"id": "c", "title": "Write c", "role": "backend-dev", "files": ["c.txt"]},
]
FIXED_PLAN = [
    {"id": "a", "title": "Write a", "role": "backend-dev", "files": ["a.txt"]},
    {"id": "b", "title": "Write b", "role": "backend-dev", "deps": ["a"], "files": ["b.txt"]},
    {"id": "c", "title": "Write c", "role": "backend-dev", "files": ["c.txt"]},
]


def is_planner(body: dict[str, Any]) -> bool:
    return any(tool.get("name") == "submit_plan" for tool in body.get("tools", []))


def planner_then_writer(planner_bodies: list[dict[str, Any]]) -> Any:
    """The producer looks around, submits a cyclic plan, then (told why) a fixed one;
    builders write their task's file."""
    build = writer()

    def reply(api: str, body: dict[str, Any]) -> Reply:
        if not is_planner(body):
            return build(api, body)
        planner_bodies.append(body)
        turn = sum(1 for m in body["messages"] if m["role"] == "assistant")
        if turn == 0:
            return Reply(tool_calls=[("list_files", {"path": "."})])
        plan = CYCLIC_PLAN if turn == 1 else FIXED_PLAN
        return Reply(tool_calls=[("submit_plan", {"tasks": plan, "summary": "three files"})])

    return reply


def goal_mission(tmp_path: Path, server: LocalAPIServer, **fields: Any) -> Path:
    return write_mission(
        tmp_path / "m",
        [],
        {},
        goal="Write a.txt, b.txt (after a) and c.txt.",
        team=[{"role": "producer"}, {"role": "backend-dev", "count": 2}],
        provider={"name": "anthropic", "model": MODEL, "max_tokens": 1000, "base_url": server.url},
        **fields,
    )


def test_a_planned_mission_corrects_its_cyclic_plan_and_completes(
    project: Path, tmp_path: Path
) -> None:
    planner_bodies: list[dict[str, Any]] = []
    with LocalAPIServer(planner_then_writer(planner_bodies)) as server:
        mission = goal_mission(tmp_path, server)
        home = tmp_path / "home"
        home.mkdir()
        env = {"PD_HOME": str(home), "ANTHROPIC_API_KEY": "test-key"}
        result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    # The cyclic plan went back to the model with the cycle and the edge to remove.
    assert len(planner_bodies) == 3
    told = json.dumps(planner_bodies[2]["messages"][-1])
    assert "cycle a -> b -> a" in told and "remove 'a' from the deps of 'b'" in told
    assert "cycle" not in json.dumps(planner_bodies[1]["messages"])
    # The corrected plan became the graph, recorded before any task was assigned.
    run_dir = sorted((home / ".pd" / "runs").iterdir())[-1]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    accepted = next(e for e in events if e["kind"] == "plan_accepted")
    assert [t["id"] for t in accepted["tasks"]] == ["a", "b", "c"]
    assert accepted["tasks"][1]["deps"] == ["a"] and accepted["critical_path"] == ["a", "b"]
    assert kinds.index("plan_accepted") < kinds.index("task_assigned")
    assigned = {e["task"]: e["worker"] for e in events if e["kind"] == "task_assigned"}
    assert set(assigned) == {"a", "b", "c"} and "w1" not in assigned.values()  # builders built
    merged = [e["task"] for e in events if e["kind"] == "task_merged"]
    assert sorted(merged) == ["a", "b", "c"] and merged.index("a") < merged.index("b")
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"a.txt", "b.txt", "c.txt"} <= set(tree)
    # Planning was metered and billed like any task.
    state = final_state(home)
    assert state["planning"]["state"] == "accepted" and state["planning"]["tasks"] == 3
    spend = state["permits"]["spend"]
    assert "plan" in spend["task"] and Decimal(spend["spent"]) == server_cost(server, MODEL)
    report = pd("report", cwd=home, env=env, check=True).stdout
    assert "planned by w1 in 1 attempt(s): 3 tasks" in report
    data = json.loads(pd("report", "--json", cwd=home, env=env, check=True).stdout)
    planning = {r["skill"]: r for r in data["skills"] if r["kind"] == "plan"}
    assert planning["list_files"] == {
        "role": "producer", "kind": "plan", "skill": "list_files", "offered": 1, "used": 1,
    }  # fmt: skip


def test_pd_plan_against_the_api_is_metered_and_holds_the_budget(
    project: Path, tmp_path: Path
) -> None:
    with LocalAPIServer(planner_then_writer([])) as server:
        mission = goal_mission(tmp_path, server)
        env = {"PD_HOME": str(tmp_path / "home"), "ANTHROPIC_API_KEY": "test-key"}
        args = ("plan", str(mission), "--repo", str(project), "--json")
        result = pd(*args, cwd=tmp_path, env=env, check=True)
        data = json.loads(result.stdout)
        assert [t["id"] for t in data["tasks"]] == ["a", "b", "c"]
        assert data["critical_path"] == ["a", "b"]
        assert Decimal(data["spend"]["spent"]) == server_cost(server, MODEL) > 0
        assert data["spend"]["run"]["calls"] == len(server.calls) == 3
        calls = len(server.calls)
        broke = pd(*args, "--budget", "0.004", cwd=tmp_path, env=env)
    assert broke.returncode == 1, broke.stdout + broke.stderr
    lines = broke.stderr.strip().splitlines()
    assert len(lines) == 1 and "budget exhausted" in lines[0]
    spent = server_cost(server, MODEL) - Decimal(data["spend"]["spent"])
    assert spent <= Decimal("0.004") and len(server.calls) - calls < 3


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_streamed_text_reaches_the_worker_log_a_line_at_a_time(
    provider: str, project: Path, tmp_path: Path
) -> None:
    def narrate(api: str, body: dict[str, Any]) -> Reply:
        task = task_of(body)
        if not any(m["role"] == "assistant" for m in body["messages"]):
            text = f"Plan for {task}:\nwrite the file,\nthen finish."
            return Reply(text, [("write_file", {"path": f"{task}.txt", "content": task})])
        return Reply(tool_calls=[("finish", {"summary": "done"})])

    key = "test-key"
    with LocalAPIServer(narrate) as server:
        result, home = run(tmp_path, project, server, ["a"], provider, key)
    assert result.returncode == 0, result.stdout + result.stderr
    logs = "".join(
        p.read_text()
        for p in (sorted((home / ".pd" / "runs").iterdir())[-1] / "logs").glob("w*.log")
    )
    lines = [line.split("] ", 2)[-1] for line in logs.splitlines() if "model: " in line]
    assert lines == ["model: Plan for a:", "model: write the file,", "model: then finish."]
