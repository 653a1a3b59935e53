"""Planning a goal: the plan check, its bound, the planning step, `pd plan`, resume."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine.preflight import build_plan, plan_payload
from orchestrator.engine.resume import restore_plan
from orchestrator.errors import PlanRejected
from orchestrator.planning.taskplan import (
    PlanCheck,
    PlanningStep,
    TeamRole,
    check_plan,
    parse_plan,
    plan_prompt,
)
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.team.catalog import shipped_dir
from tests.conftest import (
    IDENTITY,
    finish_turn,
    hold_turn,
    make_repo,
    pd,
    run_git,
    shared_dir,
    wait_file,
    write_mission,
    write_turn,
)

TEAM = [
    TeamRole("producer", ["plans"], "Plans.", "coordination"),
    TeamRole("backend-dev", ["writes-code", "runs-tests"], "Builds.", "builder", 2),
]
GOOD = [
    {"id": "api", "title": "API", "role": "backend-dev", "files": ["api.py"]},
    {"id": "docs", "title": "Docs", "capabilities": ["writes-code"], "deps": ["api"]},
]
CYCLIC = [
    {"id": "a", "title": "A", "role": "backend-dev", "deps": ["b"]},
    {"id": "b", "title": "B", "role": "backend-dev", "deps": ["a"]},
]
FIXED = [
    {"id": "a", "title": "A", "role": "backend-dev"},
    {"id": "b", "title": "B", "role": "backend-dev", "deps": ["a"]},
]
GOAL_TEAM = [{"role": "producer"}, {"role": "backend-dev", "count": 2}]


def submit(tasks: list[dict[str, Any]], summary: str = "planned") -> dict[str, Any]:
    return {"tool_calls": [{"name": "submit_plan", "input": {"tasks": tasks, "summary": summary}}]}


# ---- the check ---------------------------------------------------------------------


def test_a_valid_plan_passes_and_loads_as_a_graph() -> None:
    assert check_plan({"tasks": GOOD}, TEAM) is None
    specs, graph = parse_plan(GOOD, TEAM)
    assert [s.id for s in specs] == ["api", "docs"] and graph.critical_path() == ["api", "docs"]


def test_a_cycle_names_the_cycle_and_the_edge_to_remove() -> None:
    problem = check_plan({"tasks": CYCLIC}, TEAM)
    assert problem is not None and "\n" not in problem
    assert "tasks[1].deps: cycle a -> b -> a" in problem
    assert "remove 'a' from the deps of 'b'" in problem


def test_a_role_outside_the_team_is_refused_with_the_team_roles() -> None:
    tasks = [{"id": "ui", "title": "UI", "role": "frontend-dev"}]
    problem = check_plan({"tasks": tasks}, TEAM)
    assert problem is not None
    assert "tasks[0].role: role 'frontend-dev' is not in the team" in problem
    assert "producer, backend-dev" in problem


def test_capabilities_no_team_role_has_are_refused() -> None:
    tasks = [{"id": "db", "title": "DB", "capabilities": ["database"]}]
    problem = check_plan({"tasks": tasks}, TEAM)
    assert problem is not None and "tasks[0].capabilities" in problem and "database" in problem


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"id": "Bad Id", "title": "x"}, ["tasks[0].id", "lowercase letters"]),
        ({"id": "a", "title": "x", "owner": "me"}, ["tasks[0].owner", "unknown field", "deps"]),
        ({"id": "a"}, ["tasks[0].title", "required field is missing"]),
        ({"id": "a", "title": "x", "max_attempts": 0}, ["tasks[0].max_attempts"]),
        ({"id": "plan", "title": "x"}, ["tasks[0].id", "reserved"]),
    ],
)
def test_a_bad_field_names_the_task_and_the_field(task: dict, expected: list[str]) -> None:
    problem = check_plan({"tasks": [task]}, TEAM)
    assert problem is not None and "\n" not in problem
    for text in expected:
        assert text in problem


def test_an_unknown_dependency_suggests_the_close_id() -> None:
    tasks = [{"id": "models", "title": "M"}, {"id": "api", "title": "A", "deps": ["model"]}]
    problem = check_plan({"tasks": tasks}, TEAM)
    assert problem is not None
    assert "tasks[1].deps: unknown dependency 'model'" in problem and "'models'" in problem


def test_an_empty_plan_is_refused() -> None:
    assert "no tasks" in (check_plan({"tasks": []}, TEAM) or "")
    assert "no tasks" in (check_plan({}, TEAM) or "")


def test_rejections_are_bounded_and_the_last_problem_ends_the_attempt() -> None:
    check = PlanCheck(TEAM, limit=3)
    first = check({"tasks": CYCLIC})
    assert first is not None and "cycle" in first and "2 more rejected plans" in first
    assert "1 more rejected plan end" in (check({"tasks": []}) or "")
    with pytest.raises(PlanRejected) as ended:
        check({"tasks": CYCLIC})
    assert "rejected 3 times" in ended.value.reason and "cycle a -> b -> a" in ended.value.reason


def test_a_good_plan_after_rejections_is_accepted() -> None:
    check = PlanCheck(TEAM, limit=3)
    assert check({"tasks": CYCLIC}) is not None
    assert check({"tasks": FIXED}) is None


# ---- property: what the check accepts, the graph loads --------------------------------


@st.composite
def dags(draw: Any) -> list[dict[str, Any]]:
    """Tasks whose deps point at earlier ones (so acyclic), then listed in any order."""
    count = draw(st.integers(1, 12))
    tasks = []
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True)) if i else []
        tasks.append({"id": f"t{i}", "title": f"T{i}", "deps": [f"t{d}" for d in deps]})
    return draw(st.permutations(tasks))


@settings(max_examples=150, deadline=None)
@given(dags())
def test_any_plan_the_check_accepts_loads_into_the_task_graph(tasks: list[dict]) -> None:
    assert check_plan({"tasks": tasks}, TEAM) is None
    graph = TaskGraph(tasks)
    assert len(graph) == len(tasks)
    chain = graph.critical_path()
    assert all(a in graph.get(b).deps for a, b in itertools.pairwise(chain))


@settings(max_examples=150, deadline=None)
@given(dags(), st.data())
def test_a_plan_with_a_cycle_is_refused_naming_a_real_edge(tasks: list[dict], data: Any) -> None:
    by_id = {t["id"]: t for t in tasks}
    edges = [(t["id"], d) for t in tasks for d in t["deps"]]
    if edges:
        child, parent = data.draw(st.sampled_from(edges))
    else:  # no edge yet: make one, then close it
        child = data.draw(st.sampled_from(sorted(by_id)))
        parent = child
    by_id[parent]["deps"] = [*by_id[parent]["deps"], child]  # parent now needs its child
    problem = check_plan({"tasks": tasks}, TEAM)
    assert problem is not None and "cycle" in problem
    found = re.search(r"remove '([^']+)' from the deps of '([^']+)'", problem)
    assert found and found.group(1) in by_id[found.group(2)]["deps"]


# ---- the planning step and resume ------------------------------------------------------


def test_the_planning_step_retries_then_fails() -> None:
    step = PlanningStep(max_attempts=2)
    assert step.open and step.start("w1") == 1
    assert step.failed("no plan") == "pending" and step.start("w1") == 2
    assert step.failed("still none") == "failed" and not step.open
    assert step.view()["last_failure"] == "still none"


def goal_mission(folder: Path, cassette: dict, **fields: Any) -> Path:
    fields.setdefault("team", GOAL_TEAM)
    return write_mission(folder, [], cassette, goal="Write a and b.", **fields)


def test_restore_takes_the_recorded_plan_and_never_plans_again(
    project: Path, tmp_path: Path
) -> None:
    mission = goal_mission(tmp_path / "m", {"*": [[finish_turn()]]})
    plan = build_plan(mission, tmp_path, repo_arg=str(project))
    assert plan.planning is not None and len(plan.graph) == 0
    events = [
        ev.PlanAssigned(task="plan", attempt=1, worker="w1"),
        ev.PlanAttemptFailed(task="plan", attempt=1, reason="no plan", state="pending"),
        ev.PlanAccepted(task="plan", worker="w1", attempt=2, tasks=FIXED, summary="two"),
    ]
    assert restore_plan(plan, events)
    assert [t.id for t in plan.graph] == ["a", "b"] and not plan.planning.open
    assert plan.planning.view()["attempts"] == 2

    again = build_plan(mission, tmp_path, repo_arg=str(project))
    assert not restore_plan(again, events[:2])
    assert again.planning is not None and again.planning.open
    assert again.planning.attempts == 1 and again.planning.feedback == ["no plan"]


def test_given_tasks_with_plan_true_are_a_draft_for_the_planner(
    project: Path, tmp_path: Path
) -> None:
    mission = write_mission(
        tmp_path / "m", FIXED, {"*": [[finish_turn()]]}, goal="Refine.", plan=True, team=GOAL_TEAM
    )
    plan = build_plan(mission, tmp_path, repo_arg=str(project))
    assert plan.planning is not None and len(plan.graph) == 0
    payload = plan_payload(plan, ["read_file"])
    assert [t["id"] for t in payload["draft"]] == ["a", "b"]
    assert [r["id"] for r in payload["team"]] == ["producer", "backend-dev"]
    prompt = plan_prompt(payload)
    assert "Draft tasks" in prompt and '"deps": [' in prompt and "Refine." in prompt
    as_written = write_mission(
        tmp_path / "w", FIXED, {"*": [[finish_turn()]]}, goal="Context only.", team=GOAL_TEAM
    )
    assert build_plan(as_written, tmp_path, repo_arg=str(project)).planning is None


# ---- pd plan -----------------------------------------------------------------------------


def test_pd_plan_prints_a_written_graph_and_its_critical_path(
    project: Path, tmp_path: Path
) -> None:
    tasks = [*FIXED, {"id": "c", "title": "C", "deps": ["b"]}, {"id": "d", "title": "D"}]
    mission = write_mission(tmp_path / "m", tasks, {"*": [[finish_turn()]]})
    shown = pd("plan", str(mission), "--repo", str(project), cwd=tmp_path, check=True)
    assert "critical path: a → b → c" in shown.stdout
    data = json.loads(
        pd("plan", str(mission), "--repo", str(project), "--json", cwd=tmp_path, check=True).stdout
    )
    assert data["planned"] is False and [t["id"] for t in data["tasks"]] == ["a", "b", "c", "d"]
    assert data["critical_path"] == ["a", "b", "c"]
    assert {t["id"]: t["critical_path"] for t in data["tasks"]} == {"a": 3, "b": 2, "c": 1, "d": 1}
    assert not (tmp_path / "pd-home" / ".pd").exists()  # nothing ran


def test_pd_plan_plans_a_goal_with_the_scripted_provider(project: Path, tmp_path: Path) -> None:
    cassette = {
        "plan": [
            [{"tool_calls": [{"name": "list_files", "input": {}}]}, submit(CYCLIC), submit(FIXED)]
        ]
    }
    mission = goal_mission(tmp_path / "m", cassette)
    before = run_git(project, "worktree", "list")
    result = pd("plan", str(mission), "--repo", str(project), "--json", cwd=tmp_path, check=True)
    data = json.loads(result.stdout)
    assert data["planned"] is True and data["attempts"] == 1
    assert [t["id"] for t in data["tasks"]] == ["a", "b"] and data["critical_path"] == ["a", "b"]
    assert data["summary"] == "planned"
    assert run_git(project, "worktree", "list") == before  # its worktree is gone again
    table = pd("plan", str(mission), "--repo", str(project), cwd=tmp_path, check=True).stdout
    assert "planned in 1 attempt(s)" in table and "critical path: a → b" in table


def test_pd_plan_fails_in_one_line_when_no_attempt_plans(project: Path, tmp_path: Path) -> None:
    bad = [submit(CYCLIC)] * 3
    mission = goal_mission(tmp_path / "m", {"plan": [bad]}, max_attempts=2)
    result = pd("plan", str(mission), "--repo", str(project), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "planning failed after 2 attempts" in lines[0]
    assert "cycle a -> b -> a" in lines[0] and "Traceback" not in result.stderr


# ---- runs ----------------------------------------------------------------------------


WRITERS = {
    "a": [[write_turn("a.txt", "a\n"), finish_turn("a written")]],
    "b": [[write_turn("b.txt", "b\n"), finish_turn("b written")]],
}


def events_of(home: Path) -> list[dict[str, Any]]:
    """The newest run's complete events (none yet while the run is being created)."""
    path = sorted((home / ".pd" / "runs").iterdir())[-1] / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_a_run_whose_planning_fails_ends_cleanly_with_the_reason(
    project: Path, tmp_path: Path
) -> None:
    mission = goal_mission(tmp_path / "m", {"plan": [[submit([])] * 3]}, max_attempts=2)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home)}
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    kinds = [e["kind"] for e in events_of(home)]
    assert kinds.count("plan_assigned") == 2 and "task_assigned" not in kinds
    status = json.loads(pd("status", "--json", cwd=home, env=env, check=True).stdout)
    assert status["status"] == "planning failed"
    assert "the plan has no tasks" in status["planning"]["last_failure"]
    text = pd("status", cwd=home, env=env, check=True).stdout
    assert "planning failed after 2 attempts" in text
    report = pd("report", cwd=home, env=env, check=True).stdout
    assert "planning not accepted after 2 attempt(s)" in report


def outline_runs_commands(workspace: Path) -> None:
    """The workspace's own ``file_outline``: a read-only planner skill that runs a shell
    command (``{"command": ...}``), as a workspace's skill that shells out would."""
    skills = workspace / "skills"
    skills.mkdir(parents=True)
    manifest = json.loads((shipped_dir("skills") / "file_outline.json").read_text())
    manifest["parameters"]["properties"] = {"path": {"type": "string"}}
    manifest["handler"] = "orchestrator.team.skills.handlers.shell:run_command"
    (skills / "file_outline.json").write_text(json.dumps(manifest).replace('"path"', '"command"'))


def start_run(mission: Path, project: Path, home: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "orchestrator", "run", str(mission), "--repo", str(project)]
    env = {**os.environ, **IDENTITY, "PD_HOME": str(home)}
    return subprocess.Popen(
        args, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def wait_for_event(home: Path, kind: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = home / ".pd" / "runs"
        if (
            runs.is_dir()
            and any(runs.iterdir())
            and any(e["kind"] == kind for e in events_of(home))
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {kind} event within {timeout}s")


@pytest.mark.parametrize("crash_after", ["plan_accepted", "plan_assigned"])
def test_resume_plans_again_only_when_no_plan_was_recorded(
    crash_after: str, project: Path, tmp_path: Path
) -> None:
    # The run is held where the crash must find it, on files the test releases: the
    # planner in a command (its workspace's file_outline runs one) until plan_go, task a
    # in a command until a_go. No timing window: the run cannot get past either.
    shared, sandbox = shared_dir(tmp_path)
    plan_go, a_go = shared / "plan_go", shared / "a_go"
    if crash_after == "plan_accepted":
        plan_go.touch()
    held_plan = {"tool_calls": [{"name": "file_outline", "input": {"command": wait_file(plan_go)}}]}
    held_a = [[hold_turn(a_go), write_turn("a.txt", "a\n"), finish_turn("a written")]]
    cassette = {**WRITERS, "a": held_a, "plan": [[held_plan, submit(FIXED)]]}
    mission = goal_mission(tmp_path / "m", cassette, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    outline_runs_commands(home)
    run = start_run(mission, project, home)
    try:
        wait_for_event(home, crash_after)
    finally:
        run.send_signal(signal.SIGKILL)  # the coordinator dies without a word
        run.wait(10)
    if crash_after == "plan_assigned":  # the planner was held: no plan is recorded
        assert "plan_accepted" not in {e["kind"] for e in events_of(home)}
    plan_go.touch()
    a_go.touch()
    run_id = sorted((home / ".pd" / "runs").iterdir())[-1].name
    result = pd("resume", run_id, cwd=home, env={"PD_HOME": str(home)}, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = [e["kind"] for e in events_of(home)]
    planned_twice = crash_after == "plan_assigned"
    assert kinds.count("plan_assigned") == (2 if planned_twice else 1)
    assert kinds.count("plan_accepted") == 1
    assert ("planning the goal again" in result.stdout) == planned_twice
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"a.txt", "b.txt"} <= set(tree)


def test_pd_plan_runs_the_planners_commands_in_the_runs_sandbox(
    project: Path, tmp_path: Path
) -> None:
    """A read-only skill that runs a program (here a workspace's own, which shells out)
    runs sandboxed: it cannot read a file outside its worktree, which it could unconfined."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("outside-the-worktree\n")
    outline_runs_commands(Path(os.environ["PD_HOME"]))
    shared, sandbox = shared_dir(tmp_path)
    for mode in ["auto", "off"]:
        seen = shared / f"seen-{mode}"
        peek = {"name": "file_outline", "input": {"command": f"cat '{secret}' > '{seen}' 2>&1"}}
        cassette = {"plan": [[{"tool_calls": [peek]}, submit(FIXED)]]}
        mission = goal_mission(tmp_path / mode, cassette, sandbox={**sandbox, "mode": mode})
        pd("plan", str(mission), "--repo", str(project), cwd=tmp_path, check=True)
    assert (shared / "seen-off").read_text() == "outside-the-worktree\n"  # unconfined: read
    sandboxed = (shared / "seen-auto").read_text()
    assert "No such file" in sandboxed and "outside-the-worktree" not in sandboxed


def test_the_planners_run_tests_runs_the_gate_command(tmp_path: Path) -> None:
    """Told to run the suite once, the producer runs what the gate runs, not a guess
    that finds no runner on a project whose tests are ``bash check.sh``."""
    from orchestrator.planning.producer import planner_toolbox

    repo = make_repo(tmp_path / "repo", {"check.sh": "echo gate-ran; exit 3\n"})
    payload = {"workspace": str(tmp_path), "skills": ["run_tests"], "gate": "bash check.sh"}
    payload["team"] = []
    box = planner_toolbox(repo, payload)
    result = box.call("run_tests", {})
    assert result.is_error and "gate-ran" in result.content
    assert "`bash check.sh` FAILED (exit code 3)" in result.content
