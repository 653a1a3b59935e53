"""The seam between a worker and its agent: the typed jobs and the handoff on the wire,
each kind of agent doing (or refusing) each job, and the worker passing an agent's
refusal back as the job's answer. Real git, real processes (fake agent CLIs), the
scripted provider; nothing of pd's mocked."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from orchestrator.agent.external.agent import CommandAgent
from orchestrator.agent.model import ModelAgent, ModelSettings
from orchestrator.agent.protocol import Workspace
from orchestrator.engine.agents import command_agent, make_agent
from orchestrator.engine.configs import worker_config
from orchestrator.engine.preflight import build_plan, plan_payload
from orchestrator.engine.runstate import Slot, SlotJob, SlotState
from orchestrator.engine.snapshot import slot_view
from orchestrator.engine.worker import Channel, Worker
from orchestrator.engine.workerconfig import ProviderOptions, WorkerConfig, WorkerLimits
from orchestrator.errors import PdError
from orchestrator.providers.base import Usage
from orchestrator.providers.scripted import ScriptedProvider
from orchestrator.record.store import RunStore
from orchestrator.system.sandbox import Policy, Sandbox
from orchestrator.wire.messages import (
    HandedOff,
    Message,
    PlanJob,
    ReviewJob,
    TaskFailed,
    TaskJob,
    from_bytes,
)
from tests.conftest import finish_turn, make_repo, run_git, write_mission, write_turn
from tests.test_command_provider import EXPECTED, fake
from tests.test_planning import FIXED, GOAL_TEAM

# ---- the messages ---------------------------------------------------------------------

JOBS: list[Message] = [
    TaskJob(
        task_id="t1",
        attempt=2,
        title="Add a page",
        description="With a title.",
        branch="pd/run/t1/work",
        target_head="a" * 40,
        files=["page.html"],
        feedback=["attempt 1 broke the gate"],
        handoff="note",
        dependencies={"t0": "set up the site"},
        start_from="b" * 40,
        escalate=True,
        context_files=["README.md"],
        session=["t0 merged"],
    ),
    PlanJob(
        task_id="_plan",
        attempt=1,
        branch="pd/run/_plan/work",
        target_head="c" * 40,
        feedback=["plan rejected: a cycle"],
        mission="site",
        goal="A site.",
        description="Static.",
        team=[{"id": "producer", "count": 1}],
        draft=[{"id": "a", "title": "A"}],
        max_attempts=4,
        gate="bash check.sh",
        skills=["read_file"],
        workspace="/ws",
    ),
    ReviewJob(
        task_id="t1",
        attempt=2,
        commit="d" * 40,
        base="e" * 40,
        title="Add a page",
        description="With a title.",
        summary="added it",
        rounds_used=1,
        max_rounds=2,
        previous_comments="1. must: escape the title",
        skills=["git_blame"],
        test_command="bash check.sh",
    ),
    HandedOff(
        worker_id="w1",
        task_id="t1",
        attempt=3,
        start_from="f" * 40,
        handoff="was handed off on request",
        skills={"offered": ["read_file"], "used": []},
    ),
]


@pytest.mark.parametrize("message", JOBS, ids=lambda m: type(m).__name__)
def test_jobs_and_the_handoff_cross_the_wire_as_json_and_back(message: Message) -> None:
    raw = message.to_bytes()
    assert json.loads(raw)["type"] == type(message).__name__
    back = from_bytes(raw)
    assert type(back) is type(message) and back == message


def test_a_plan_job_carries_the_brief_the_planner_reads(project: Path, tmp_path: Path) -> None:
    """The coordinator builds a PlanJob from ``plan_payload``; the model agent's planner
    reads ``brief()``: a key either side renames breaks here, not mid-run."""
    mission = write_mission(
        tmp_path / "m", FIXED, {"*": [[finish_turn()]]}, goal="Refine.", plan=True, team=GOAL_TEAM
    )
    payload = plan_payload(build_plan(mission, tmp_path, repo_arg=str(project)), ["read_file"])
    job = PlanJob(task_id="_plan", attempt=1, branch="b", target_head="h", **payload)
    assert job.brief() == payload
    assert from_bytes(job.to_bytes()) == job


def test_a_worker_config_crosses_the_spawn_boundary_typed(project: Path, tmp_path: Path) -> None:
    mission = write_mission(tmp_path / "m", FIXED, {"*": [[finish_turn()]]})
    plan = build_plan(mission, tmp_path, repo_arg=str(project))
    store = RunStore.create(tmp_path / "home")
    data = worker_config(plan, store, tmp_path / "trees", "w1", "backend-dev")
    config = WorkerConfig.from_dict(json.loads(json.dumps(data)))  # as plain JSON data
    assert config.provider.name == "scripted" and not config.provider.paid
    assert Path(config.provider.cassette or "").read_text().startswith("{")
    assert config.limits == WorkerLimits.from_dict(plan.mission.limits.model_dump())
    assert WorkerConfig.from_dict(config.to_dict()) == config


# ---- the CLI agent --------------------------------------------------------------------


def workspace(path: Path, **channels: object) -> Workspace:
    return Workspace(path=path, env={}, sandbox=Sandbox(Policy(), path), **channels)  # type: ignore[arg-type]


def test_the_cli_agent_refuses_to_plan_and_to_review(tmp_path: Path) -> None:
    agent = CommandAgent(agent="claude", system_prompt="", timeout=30, executable=fake("claude"))
    plan = JOBS[1]
    review = JOBS[2]
    assert isinstance(plan, PlanJob) and isinstance(review, ReviewJob)
    with pytest.raises(PdError, match=r"claude CLI agent cannot plan: .*scripted, anthropic"):
        agent.plan(plan, workspace(tmp_path))
    with pytest.raises(PdError, match=r"claude CLI agent cannot review: .*review off"):
        agent.review(review, workspace(tmp_path))
    assert list(tmp_path.iterdir()) == []  # the CLI never ran


def test_the_cli_agent_gets_only_its_own_key_and_reports_its_usage(tmp_path: Path) -> None:
    config = WorkerConfig(
        run_id="r",
        run_dir=str(tmp_path),
        repo=str(tmp_path),
        worktree_root=str(tmp_path),
        role_id="backend-dev",
        system_prompt="You are a developer.",
        provider=ProviderOptions("command", agent="claude", executable=fake("claude")),
        model="model-x",
        max_tokens=1000,
        limits=WorkerLimits(attempt_timeout=60),
        port_base=4000,
    )
    keys = {"ANTHROPIC_API_KEY": "k-ant", "OPENAI_API_KEY": "k-oai"}
    agent = command_agent(config, keys)
    reported: list[tuple[str, Usage, object]] = []
    work = tmp_path / "work"
    work.mkdir()
    ws = workspace(work, report_usage=lambda *args: reported.append(args))
    ws.env = {"FAKE_MODE": "env"}
    job = JOBS[0]
    assert isinstance(job, TaskJob)
    result = agent.attempt(job, ws)
    assert result.finished, result.reason
    assert result.summary == EXPECTED["claude"].summary
    child_env = json.loads((work / "env.json").read_text())
    assert child_env["ANTHROPIC_API_KEY"] == "k-ant" and "OPENAI_API_KEY" not in child_env
    assert (work / "done.txt").read_text().startswith("You are a developer.")
    assert reported == [("model-x", EXPECTED["claude"].usage, EXPECTED["claude"].cost)]


# ---- the model agent ------------------------------------------------------------------


def scripted(tmp_path: Path, tasks: dict) -> ScriptedProvider:
    cassette = tmp_path / "cassette.json"
    cassette.write_text(json.dumps({"version": 1, "tasks": tasks}))
    return ScriptedProvider(cassette)


SETTINGS = ModelSettings(
    system_prompt="You are a developer.",
    model="m",
    max_tokens=1000,
    max_turns=5,
    command_timeout=30,
    output_cap=20_000,
    ranking_model=None,
    role_skills=["read_file", "write_file"],
)


def test_the_model_agent_runs_an_attempt_and_a_review(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    base = run_git(repo, "rev-parse", "HEAD")
    verdict = {"verdict": "request_changes", "comments": "1. must: say two"}
    provider = scripted(
        tmp_path,
        {
            "t1": [[write_turn("a.txt", "two\n"), finish_turn("wrote two")]],
            "t1:review": [[{"tool_calls": [{"name": "submit_review", "input": verdict}]}]],
        },
    )
    agent = ModelAgent(provider, SETTINGS)
    records: list[dict] = []
    ws = workspace(repo, record=records.append)
    job = TaskJob(task_id="t1", attempt=1, title="T", description="", branch="b", target_head=base)
    result = agent.attempt(job, ws)
    assert result.finished and result.summary == "wrote two", result.reason
    assert (repo / "a.txt").read_text() == "two\n"
    assert ws.toolbox is not None and "a.txt" in ws.toolbox.touched  # the worker can abort it
    assert any(r.get("kind") == "skills" for r in records)

    run_git(repo, "commit", "-qam", "two")
    commit = run_git(repo, "rev-parse", "HEAD")
    review = ReviewJob(task_id="t1", attempt=1, commit=commit, base=base, title="T")
    judged = agent.review(review, workspace(repo))
    assert judged.finished and judged.final == verdict


def test_the_model_agent_without_a_planner_says_so(tmp_path: Path) -> None:
    agent = ModelAgent(scripted(tmp_path, {}), SETTINGS, name="scripted")
    plan = JOBS[1]
    assert isinstance(plan, PlanJob)
    with pytest.raises(PdError, match="scripted agent was built without a planner"):
        agent.plan(plan, workspace(tmp_path))


def test_make_agent_builds_the_model_agent_with_its_planner(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    cassette.write_text(json.dumps({"version": 1, "tasks": {}}))
    config = WorkerConfig(
        run_id="r",
        run_dir=str(tmp_path),
        repo=str(tmp_path),
        worktree_root=str(tmp_path),
        role_id="producer",
        system_prompt="",
        provider=ProviderOptions("scripted", cassette=str(cassette)),
        model="m",
        max_tokens=1000,
        limits=WorkerLimits(),
        port_base=4000,
    )
    agent = make_agent(config, {}, permits=None, should_stop=lambda: False)
    assert isinstance(agent, ModelAgent) and agent.planner is not None
    assert agent.settings.ranking_model is None  # a cassette holds no ranking calls
    paid = WorkerConfig.from_dict(
        {**config.to_dict(), "provider": {"name": "anthropic", "model": "m"}}
    )
    with pytest.raises(PdError, match="paid model calls needs a permit pipe"):
        make_agent(paid, {"ANTHROPIC_API_KEY": "k"}, permits=None, should_stop=lambda: False)


# ---- the worker -----------------------------------------------------------------------


def test_a_worker_answers_a_job_its_agent_refuses_with_the_refusal(tmp_path: Path) -> None:
    """No ``if provider == "command"`` in the worker: the CLI agent's own refusal comes
    back as the job's failure, and the worker lives on for the next job."""
    repo = make_repo(tmp_path / "repo")
    head = run_git(repo, "rev-parse", "HEAD")
    store = RunStore.create(tmp_path / "home")
    config = WorkerConfig(
        run_id=store.run_id,
        run_dir=str(store.dir),
        repo=str(repo),
        worktree_root=str(tmp_path / "trees"),
        role_id="producer",
        system_prompt="",
        provider=ProviderOptions("command", agent="claude", executable=fake("claude")),
        model="",
        max_tokens=1000,
        limits=WorkerLimits(),
        port_base=4000,
    )
    ours, theirs = multiprocessing.Pipe()
    worker = Worker("w1", config, Channel(theirs))
    job = PlanJob(task_id="_plan", attempt=1, branch="pd/r/_plan/work", target_head=head)
    answer = worker.attempt(job)
    assert isinstance(answer, TaskFailed) and not answer.infrastructure
    assert "claude CLI agent cannot plan" in answer.reason
    started = from_bytes(ours.recv_bytes())
    assert (started.task_id, started.attempt) == ("_plan", 1)  # type: ignore[attr-defined]
    assert "cannot plan" in store.log_path("w1").read_text()
    assert worker.workspace is None


# ---- slot states ----------------------------------------------------------------------


def test_slot_states_are_enums_that_read_as_before_in_state_json() -> None:
    """``pd status`` and other readers of state.json compare the plain strings."""
    slot = Slot("w1", "backend-dev")
    assert json.loads(json.dumps(slot_view(slot, None)))["state"] == "booting"
    slot.state, slot.task, slot.job = SlotState.BUSY, "t1", SlotJob.REVIEW
    view = json.loads(json.dumps(slot_view(slot, None)))
    assert (view["state"], view["job"]) == ("busy", "review")
    assert [s.value for s in SlotState] == ["booting", "idle", "busy", "retired", "stopped"]
