"""Bad input: one line naming file, field and fix; exit 2; nothing changed on disk or git."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import finish_turn, pd, run_git, write_mission

TASKS = [
    {"id": "a", "title": "A", "role": "backend-dev"},
    {"id": "b", "title": "B", "role": "backend-dev", "deps": ["a"]},
]
CASSETTE = {"*": [[finish_turn()]]}


def git_state(repo: Path) -> tuple[str, str, str]:
    return (
        run_git(repo, "for-each-ref"),
        run_git(repo, "worktree", "list", "--porcelain"),
        run_git(repo, "status", "--porcelain", "--ignored"),
    )


def mission_with(**fields: object) -> Callable[[Path, Path], tuple[Path, str]]:
    def make(folder: Path, repo: Path) -> tuple[Path, str]:
        rest = dict(fields)
        tasks = rest.pop("tasks", TASKS)
        return write_mission(folder, tasks, CASSETTE, **rest), ""

    return make


def raw_mission(text: str) -> Callable[[Path, Path], tuple[Path, str]]:
    def make(folder: Path, repo: Path) -> tuple[Path, str]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mission.json").write_text(text)
        return folder / "mission.json", ""

    return make


def _dirty(folder: Path, repo: Path) -> tuple[Path, str]:
    (repo / "README.md").write_text("local edit\n")
    return write_mission(folder, TASKS, CASSETTE), ""


CASES: dict[str, tuple[Callable[[Path, Path], tuple[Path, str]], list[str]]] = {
    "missing file": (lambda f, r: (f / "nope.json", ""), ["nope.json", "not found"]),
    "malformed json": (raw_mission("{ nope"), ["mission.json", "line 1"]),
    "not an object": (raw_mission("[1, 2]"), ["mission.json", "JSON object"]),
    "unknown field": (mission_with(bogus=1), ["mission.json", "bogus", "unknown field"]),
    "unknown task field": (
        mission_with(tasks=[{"id": "a", "title": "A", "dep": []}]),
        ["tasks[0].dep", "unknown field"],
    ),
    "unknown team role": (
        mission_with(team=[{"role": "wizard"}]),
        ["team[0].role", "wizard", "backend-dev"],
    ),
    "unknown task role": (
        mission_with(tasks=[{"id": "a", "title": "A", "role": "wizard"}]),
        ["tasks[0].role", "wizard"],
    ),
    "cycle": (
        mission_with(
            tasks=[
                {"id": "a", "title": "A", "deps": ["c"]},
                {"id": "b", "title": "B", "deps": ["a"]},
                {"id": "c", "title": "C", "deps": ["b"]},
            ]
        ),
        ["tasks[", "cycle", "a", "b", "c"],
    ),
    "unknown dependency": (
        mission_with(tasks=[{"id": "a", "title": "A", "deps": ["zz"]}]),
        ["tasks[0].deps", "zz"],
    ),
    "duplicate id": (
        mission_with(tasks=[{"id": "a", "title": "A"}, {"id": "a", "title": "B"}]),
        ["tasks[1].id", "a"],
    ),
    "no tasks": (mission_with(tasks=[]), ["tasks"]),
    "missing test command": (mission_with(test_command=None), ["test_command", "no test command"]),
    "gate not found": (
        mission_with(test_command="no-such-tool --run"),
        ["test_command", "no-such-tool", "not found"],
    ),
    "missing branch": (mission_with(target_branch="release"), ["target_branch", "release", "main"]),
    "repo missing": (mission_with(repo="../nowhere"), ["repo", "does not exist"]),
    "repo not git": (mission_with(repo="."), ["repo", "not a git repository"]),
    "missing cassette": (
        mission_with(provider={"name": "scripted", "cassette": "gone.json"}),
        ["provider.cassette", "gone.json"],
    ),
    "dirty checkout": (_dirty, ["target_branch", "uncommitted changes"]),
    "missing context file": (
        mission_with(context_files=["README.md", "docs/brief.md"]),
        ["context_files[1]", "docs/brief.md", "not in main"],
    ),
    "review without a reviewer": (
        mission_with(review=True),
        ["mission.json", "review", "reviews-code", "tech-lead"],
    ),
    "task review without a reviewer": (
        mission_with(tasks=[TASKS[0], {**TASKS[1], "review": True}]),
        ["mission.json", "tasks[1].review", "reviews-code"],
    ),
    "no review rounds": (mission_with(max_review_rounds=0), ["max_review_rounds"]),
    "no worker fits": (
        mission_with(tasks=[{"id": "a", "title": "A", "role": "qa-engineer"}]),
        ["tasks[0].role", "no worker"],
    ),
    "goal without producer": (
        mission_with(tasks=[], goal="Build the thing."),
        ["mission.json: team", "producer"],
    ),
    "plan without goal": (mission_with(plan=True), ["mission.json: goal", "planning needs a goal"]),
}


VALIDATE_TOO = [
    "malformed json",
    "cycle",
    "gate not found",
    "dirty checkout",
    "review without a reviewer",
]
PLAN_TOO = ["cycle", "goal without producer", "plan without goal"]


@pytest.mark.parametrize(
    ("case", "command"),
    [(case, "run") for case in CASES]
    + [(case, "validate") for case in VALIDATE_TOO]
    + [(case, "plan") for case in PLAN_TOO],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, command: str, project: Path, tmp_path: Path
) -> None:
    make, expected = CASES[case]
    home = tmp_path / "home"
    home.mkdir()
    mission, _ = make(tmp_path / "missions", project)
    before = git_state(project)
    listing = sorted(p.name for p in home.iterdir())

    result = (
        pd(command, str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
        if "repo" not in case
        else pd(command, str(mission), cwd=home, env={"PD_HOME": str(home)})
    )

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "fix:" in lines[0]
    assert git_state(project) == before
    assert sorted(p.name for p in home.iterdir()) == listing  # no .pd, no worktrees


def test_repo_that_is_not_git_via_flag(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    mission = write_mission(tmp_path / "m", TASKS, CASSETTE)
    result = pd(
        "run", str(mission), "--repo", str(plain), cwd=tmp_path, env={"PD_HOME": str(tmp_path)}
    )
    assert result.returncode == 2
    assert "--repo" in result.stderr and "not a git repository" in result.stderr
    assert not (tmp_path / ".pd").exists()


def test_valid_mission_validates(project: Path, tmp_path: Path) -> None:
    mission = write_mission(tmp_path / "m", TASKS, CASSETTE)
    result = pd("validate", str(mission), "--repo", str(project), cwd=tmp_path, check=True)
    assert "2 tasks" in result.stdout and "a → b" in result.stdout
    # a team of builders only runs, but validate says what the team rules would want
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert any("producer" in line for line in warnings), result.stdout
    assert json.loads((tmp_path / "m" / "mission.json").read_text())["tasks"] == TASKS


@pytest.mark.parametrize(
    "gate", ["if [ -f x ]; then exit 1; fi; bash check.sh", "(cd . && bash check.sh)", "true"]
)
def test_compound_gate_commands_are_not_taken_for_programs(
    gate: str, project: Path, tmp_path: Path
) -> None:
    mission = write_mission(tmp_path / "m", TASKS, CASSETTE, test_command=gate)
    pd("validate", str(mission), "--repo", str(project), cwd=tmp_path, check=True)
