"""Bad input: one line naming file, field and fix; exit 2; nothing changed on disk or git."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import finish_turn, pd, run_git, write_mission

TASKS = [
    {"id": "a", "title": "A", "role": "backend-dev"},
    {"id": "b", "title": "B", "role": "backend-dev", "deps": ["a"]},
]
# Every task writes a file of its own (a finish without a change is not work to merge).
WRITE_OWN_FILE = {"name": "run_command", "input": {"command": "mktemp -p . out.XXXXXXXX"}}
CASSETTE = {"*": [[{"tool_calls": [WRITE_OWN_FILE]}, finish_turn()]]}


def git_state(repo: Path) -> tuple[str, str, str]:
    return (
        run_git(repo, "for-each-ref"),
        run_git(repo, "worktree", "list", "--porcelain"),
        run_git(repo, "status", "--porcelain", "--ignored"),
    )


@dataclass
class Where:
    """What a case may use: the mission's folder, the repository, a port nobody answers."""

    folder: Path
    repo: Path
    dead_port: int


Made = tuple[Path, list[str]]  # the mission file and the extra command-line arguments
Make = Callable[[Where], Made]


def mission_with(*args: str, cassette: object = CASSETTE, **fields: object) -> Make:
    def make(at: Where) -> Made:
        rest = dict(fields)
        tasks = rest.pop("tasks", TASKS)
        path = write_mission(at.folder, tasks, CASSETTE, **rest)
        if cassette is not CASSETTE:
            text = cassette if isinstance(cassette, str) else json.dumps(cassette)
            (at.folder / "cassette.json").write_text(text)
        return path, list(args)

    return make


def raw_mission(text: str) -> Make:
    def make(at: Where) -> Made:
        at.folder.mkdir(parents=True, exist_ok=True)
        (at.folder / "mission.json").write_text(text)
        return at.folder / "mission.json", []

    return make


def _dirty(at: Where) -> Made:
    (at.repo / "README.md").write_text("local edit\n")
    return write_mission(at.folder, TASKS, CASSETTE), []


def _untracked_in_the_way(at: Where) -> Made:
    """An untracked file where a task says it will write: a merge would overwrite it."""
    (at.repo / "api").mkdir()
    (at.repo / "api" / "auth.py").write_text("mine\n")
    tasks = [{**TASKS[0], "files": ["api/auth.py"]}, TASKS[1]]
    return write_mission(at.folder, tasks, CASSETTE), []


def _worktrees_on_a_file(at: Where) -> Made:
    at.folder.mkdir(parents=True, exist_ok=True)
    (at.folder / "not-a-folder").write_text("")
    return write_mission(at.folder, TASKS, CASSETTE), [
        "--worktrees",
        str(at.folder / "not-a-folder"),
    ]


def _worktrees_field_on_a_file(at: Where) -> Made:
    at.folder.mkdir(parents=True, exist_ok=True)
    (at.folder / "not-a-folder").write_text("")
    return write_mission(at.folder, TASKS, CASSETTE, worktrees=str(at.folder / "not-a-folder")), []


def _nothing_listening(at: Where) -> Made:
    url = f"http://127.0.0.1:{at.dead_port}/v1"
    return write_mission(at.folder, TASKS, CASSETTE), ["--provider", "openai", "--base-url", url]


def _openai_at(url: str) -> Make:
    return mission_with(provider={"name": "openai", "base_url": url})


def _task_id(task_id: str) -> Make:
    return mission_with(tasks=[{"id": task_id, "title": "A", "role": "backend-dev"}])


CASES: dict[str, tuple[Make, list[str]]] = {
    "missing file": (lambda at: (at.folder / "nope.json", []), ["nope.json", "not found"]),
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
    "missing test command": (
        mission_with(test_command=None),
        ["mission.json: test_command", "no test command", "shows none", "set test_command"],
    ),
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
    "dirty checkout": (_dirty, ["target_branch", "uncommitted changes", "README.md"]),
    "untracked file a merge would write": (
        _untracked_in_the_way,
        ["target_branch", "untracked", "api/auth.py", "tasks[0].files"],
    ),
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
    "task id with ..": (_task_id("a..b"), ["tasks[0].id", "a..b", "branch"]),
    "task id ending .lock": (_task_id("a.lock"), ["tasks[0].id", "a.lock", "branch"]),
    "task id ending .": (_task_id("a."), ["tasks[0].id", "'a.'", "branch"]),
    "task id pattern shown whole": (_task_id("Bad Id"), ["tasks[0].id", "[a-z0-9][a-z0-9._-]"]),
    "unknown provider": (
        mission_with("--provider", "gpt-local"),
        ["--provider", "gpt-local", "scripted, anthropic, openai, command"],
    ),
    "budget NaN": (mission_with("--budget", "NaN"), ["--budget", "NaN"]),
    "budget inf": (mission_with("--budget", "inf"), ["--budget", "inf"]),
    "budget Infinity": (mission_with("--budget", "Infinity"), ["--budget", "Infinity"]),
    "budget negative": (mission_with("--budget", "-5"), ["--budget", "-5"]),
    "budget NaN in the file": (mission_with(budget="NaN"), ["mission.json: budget"]),
    "malformed cassette": (mission_with(cassette="{ nope"), ["provider.cassette", "JSON"]),
    "cassette of the wrong shape": (
        mission_with(cassette={"version": 1, "tasks": {"a": "finish"}}),
        ["provider.cassette", "tasks.a"],
    ),
    "cassette without a task": (
        mission_with(cassette={"version": 1, "tasks": {"a": [[finish_turn()]]}}),
        ["provider.cassette", "'b'", "tasks[1]"],
    ),
    "cassette without a review": (
        mission_with(
            cassette={"version": 1, "tasks": {"a": [[finish_turn()]], "b": [[finish_turn()]]}},
            team=[{"role": "backend-dev"}, {"role": "code-reviewer"}],
            review=True,
        ),
        ["provider.cassette", "'a:review'"],
    ),
    "worktrees on a file": (_worktrees_on_a_file, ["--worktrees", "not-a-folder", "not a folder"]),
    "worktrees field on a file": (
        _worktrees_field_on_a_file,
        ["mission.json: worktrees", "not-a-folder", "not a folder"],
    ),
    "base_url not a URL": (
        _openai_at("localhost:11434"),
        ["mission.json: provider.base_url", "localhost:11434", "http://"],
    ),
    "base_url without a host": (_openai_at("http:///v1"), ["provider.base_url", "host"]),
    "base_url with nothing listening": (
        _nothing_listening,
        ["--base-url", "127.0.0.1", "nothing answers"],
    ),
    "gate timeout tiny": (mission_with(gate={"timeout": 1e-9}), ["gate.timeout", "1"]),
    "gate parallel zero": (mission_with(gate={"parallel": 0}), ["gate.parallel", "1"]),
}


RUN_ONLY = {  # options only `pd run` has
    "budget NaN",
    "budget inf",
    "budget Infinity",
    "budget negative",
    "worktrees on a file",
}
VALIDATE_TOO = [case for case in CASES if case not in RUN_ONLY and case != "missing file"]
PLAN_TOO = ["cycle", "goal without producer", "plan without goal"]


@pytest.mark.parametrize(
    ("case", "command"),
    [(case, "run") for case in CASES]
    + [(case, "validate") for case in VALIDATE_TOO]
    + [(case, "plan") for case in PLAN_TOO],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, command: str, project: Path, tmp_path: Path, dead_port: int
) -> None:
    make, expected = CASES[case]
    home = tmp_path / "home"
    home.mkdir()
    mission, extra = make(Where(tmp_path / "missions", project, dead_port))
    before = git_state(project)
    listing = sorted(p.name for p in home.iterdir())

    repo = ["--repo", str(project)] if "repo" not in case else []
    result = pd(command, str(mission), *repo, *extra, cwd=home, env={"PD_HOME": str(home)})

    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "fix:" in lines[0]
    assert git_state(project) == before
    assert sorted(p.name for p in home.iterdir()) == listing  # no .pd, no worktrees


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but not listening: a connection is refused, and nobody else can take
    the port while the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


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


IDS = ["a", "a.b", "a-b_c", "a..b", "a.lock", "a.", "a.lock.b", "a.locks", "ab.lock", "a...b"]


@pytest.mark.parametrize("task_id", IDS)
def test_task_ids_are_accepted_exactly_when_git_takes_the_branch(
    task_id: str, project: Path, tmp_path: Path
) -> None:
    git_says = subprocess.run(
        ["git", "check-ref-format", "--branch", f"pd/20250101-000000-abcd/{task_id}"],
        capture_output=True,
    )
    mission = _task_id(task_id)(Where(tmp_path / "m", project, 0))[0]
    result = pd("validate", str(mission), "--repo", str(project), cwd=tmp_path)
    assert (result.returncode == 0) == (git_says.returncode == 0), result.stderr


def test_an_untracked_mission_in_the_checkout_does_not_block(project: Path) -> None:
    """The README's own workflow: cd my-repo; pd validate missions/my.json; pd run …"""
    mission = write_mission(project / "missions", TASKS, CASSETTE)
    (project / "notes.txt").write_text("my own untracked notes\n")
    home = {"PD_HOME": ""}  # the workspace is the checkout itself

    checked = pd("validate", "missions/mission.json", cwd=project, env=home)
    assert checked.returncode == 0, checked.stderr
    ran = pd("run", "missions/mission.json", "--quiet", cwd=project, env=home)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads(pd("report", "--json", cwd=project, env=home, check=True).stdout)
    assert report["counts"]["merged"] == 2
    assert json.loads(mission.read_text())["tasks"] == TASKS
    assert (project / "notes.txt").read_text() == "my own untracked notes\n"


def test_validate_takes_provider_and_base_url_without_a_key(project: Path, tmp_path: Path) -> None:
    mission = write_mission(tmp_path / "m", TASKS, CASSETTE)
    env = {"OPENAI_API_KEY": "", "PD_HOME": str(tmp_path)}
    with socket.create_server(("127.0.0.1", 0)) as server:  # a local server's port
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1"
        args = ["--repo", str(project), "--provider", "openai"]
        result = pd("validate", str(mission), *args, "--base-url", url, cwd=tmp_path, env=env)
        keyless = pd("validate", str(mission), *args, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout
    assert keyless.returncode == 2 and "OPENAI_API_KEY" in keyless.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding one finished run of TASKS (its logs name tasks a and b)."""
    from tests.conftest import CHECK_SH, make_repo

    root = tmp_path_factory.mktemp("finished")
    repo = make_repo(root / "project", {"check.sh": CHECK_SH, "README.md": "project\n"})
    mission = write_mission(root / "m", TASKS, CASSETTE)
    home = root / "home"
    home.mkdir()
    pd("run", str(mission), "--repo", str(repo), "--quiet", cwd=home, env={"PD_HOME": str(home)})
    return home


LOG_CASES = {
    "unknown task": (["--task", "nope"], ["--task", "nope", "a, b"]),
    "unknown worker": (["--worker", "w9"], ["--worker", "w9", "w1"]),
    "negative lines": (["-n", "-5"], ["--lines", "-5", "0 or more"]),
}


@pytest.mark.parametrize("case", LOG_CASES)
def test_logs_bad_filters_are_one_line_exit_2(case: str, finished_run: Path) -> None:
    args, expected = LOG_CASES[case]
    before = sorted(str(p) for p in finished_run.rglob("*"))
    result = pd("logs", *args, cwd=finished_run, env={"PD_HOME": str(finished_run)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert sorted(str(p) for p in finished_run.rglob("*")) == before


def test_logs_of_a_known_task_still_print(finished_run: Path) -> None:
    result = pd("logs", "--task", "b", cwd=finished_run, env={"PD_HOME": str(finished_run)})
    assert result.returncode == 0, result.stderr
    assert "[b]" in result.stdout and "[a]" not in result.stdout
