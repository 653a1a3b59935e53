"""A mission without ``test_command`` gets its gate from the repository's committed tree:
pytest, ``npm test``, ``cargo test``, ``go test ./...`` or ``make test``; nothing that
fits is still exit 2 naming the field and the fix."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from orchestrator.spec.testcommand import detect_test_command
from orchestrator.system.gitutil import rev_parse
from tests.conftest import finish_turn, make_repo, pd, run_git, shared_dir, write_mission

SHIPPED = Path(__file__).resolve().parent.parent / "missions"
# The shipped templates name no test command: the repository they run on shows it.
GOAL_MISSIONS = sorted(
    p.name
    for p in SHIPPED.glob("*.json")
    if not p.name.endswith(".cassette.json") and "test_command" not in p.read_text()
)
NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'
PYTEST_SUITE = {
    "pyproject.toml": "[project]\nname = 'x'\n",
    "tests/test_x.py": "def test_x(): pass\n",
}
MAKE_TEST = "build:\n\ttrue\n\ntest: build\n\tpython -m pytest -q\n"


def detect(tmp_path: Path, files: dict[str, str]) -> tuple[str, str] | None:
    repo = make_repo(tmp_path / "repo", files)
    found = detect_test_command(repo, rev_parse(repo, "HEAD") or "")
    return None if found is None else (found.command, found.reason)


def package_json(test: str | None) -> str:
    scripts = {"build": "tsc"} if test is None else {"build": "tsc", "test": test}
    return json.dumps({"name": "app", "scripts": scripts})


@pytest.mark.parametrize(
    ("files", "command", "evidence"),
    [
        (PYTEST_SUITE, "-m pytest -q", ["pyproject.toml", "tests/"]),
        ({"setup.py": "", "test/test_a.py": ""}, "-m pytest -q", ["setup.py", "test/"]),
        ({"setup.cfg": "", "pkg/util_test.py": ""}, "-m pytest -q", ["setup.cfg", "util_test.py"]),
        (
            {
                "pyproject.toml": "[tool.pytest.ini_options]\ntestpaths = ['src']\n",
                "src/test_m.py": "",
            },
            "-m pytest -q",
            ["[tool.pytest.ini_options]", "test_m.py"],
        ),
        ({"pytest.ini": "[pytest]\n", "tests/test_a.py": ""}, "-m pytest -q", ["pytest.ini"]),
        ({"package.json": package_json("jest")}, "npm test", ["package.json", "jest"]),
        ({"Cargo.toml": "[package]\nname = 'x'\n"}, "cargo test", ["Cargo.toml"]),
        ({"go.mod": "module x\n"}, "go test ./...", ["go.mod"]),
        ({"Makefile": MAKE_TEST}, "make test", ["Makefile", "test target"]),
        ({"Makefile": "lint test: deps\n\ttrue\n"}, "make test", ["Makefile"]),
    ],
)
def test_each_rule_detects_its_command_from_the_committed_tree(
    files: dict[str, str], command: str, evidence: list[str], tmp_path: Path
) -> None:
    found = detect(tmp_path, files)
    assert found is not None
    assert found[0].endswith(command)
    for text in evidence:
        assert text in found[1], found[1]


@pytest.mark.parametrize(
    "files",
    [
        {"README.md": "hello\n"},
        {"pyproject.toml": "[project]\nname = 'x'\n", "src/x.py": ""},  # Python, but no tests
        {"tests/test_x.py": ""},  # tests, but not a Python project
        {"package.json": package_json(NPM_PLACEHOLDER)},  # npm's placeholder fails on purpose
        {"package.json": package_json(None)},
        {"package.json": "{ not json"},
        {"Makefile": "build:\n\ttrue\n"},
        {"Makefile": "test_all:\n\ttrue\nTEST := 1\ntest := 2\n"},
    ],
)
def test_without_real_evidence_nothing_is_detected(files: dict[str, str], tmp_path: Path) -> None:
    assert detect(tmp_path, files) is None


def test_an_uncommitted_file_does_not_count(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": "[project]\nname = 'x'\n"})
    (repo / "tests").mkdir()
    (repo / "tests" / "test_x.py").write_text("def test_x(): pass\n")
    (repo / "Makefile").write_text(MAKE_TEST)
    (repo / "package.json").write_text(package_json("jest"))
    head = rev_parse(repo, "HEAD") or ""
    assert detect_test_command(repo, head) is None
    run_git(repo, "add", "tests")
    run_git(repo, "commit", "-q", "-m", "tests")
    found = detect_test_command(repo, rev_parse(repo, "HEAD") or "")
    assert found is not None and found.command.endswith("-m pytest -q")
    assert detect_test_command(repo, head) is None  # the older commit still has no tests


def test_a_makefile_test_target_wins_and_the_others_are_named(tmp_path: Path) -> None:
    files = {**PYTEST_SUITE, "Makefile": MAKE_TEST, "package.json": package_json("jest")}
    found = detect(tmp_path, files)
    assert found is not None
    command, reason = found
    assert command == "make test"
    assert "also fits" in reason and "-m pytest -q" in reason and "npm test" in reason


def test_python_comes_before_node_rust_and_go(tmp_path: Path) -> None:
    files = {**PYTEST_SUITE, "package.json": package_json("jest"), "go.mod": "module x\n"}
    found = detect(tmp_path, files)
    assert found is not None and found[0].endswith("-m pytest -q")
    assert "npm test" in found[1] and "go test ./..." in found[1]
    rust_and_go = detect(tmp_path / "b", {"Cargo.toml": "", "go.mod": "module x\n"})
    assert rust_and_go is not None and rust_and_go[0] == "cargo test"


# ---- through the CLI ------------------------------------------------------------------


def python_repo(path: Path) -> Path:
    """An ordinary Python repository with a pytest suite and no pd mission in it."""
    return make_repo(path, {**PYTEST_SUITE, "README.md": "A small web app.\n"})


def test_the_shipped_templates_leave_the_test_command_to_detection() -> None:
    assert "web-app.json" in GOAL_MISSIONS and len(GOAL_MISSIONS) >= 6


def test_web_app_validates_on_a_python_repo_but_for_the_api_key(tmp_path: Path) -> None:
    """The issue's bar: the shipped web-app mission on a plain pytest repository."""
    repo = python_repo(tmp_path / "repo")
    mission = str(SHIPPED / "web-app.json")
    args = ("validate", mission, "--repo", str(repo))
    before = run_git(repo, "for-each-ref") + run_git(repo, "status", "--porcelain", "--ignored")

    keyless = pd(*args, cwd=tmp_path, env={"ANTHROPIC_API_KEY": "", "PD_HOME": str(tmp_path)})

    assert keyless.returncode == 2, keyless.stdout + keyless.stderr
    problems = [line for line in keyless.stderr.splitlines() if line.strip()]
    assert len(problems) == 1 and "ANTHROPIC_API_KEY" in problems[0], keyless.stderr
    named = [line for line in keyless.stdout.splitlines() if line.startswith("tests: ")]
    assert len(named) == 1, keyless.stdout
    assert "-m pytest -q (detected: pytest: pyproject.toml and tests/)" in named[0]
    # … and with a key there is nothing else wrong (no call is made while validating)
    keyed = pd(*args, cwd=tmp_path, env={"ANTHROPIC_API_KEY": "sk-x", "PD_HOME": str(tmp_path)})
    assert keyed.returncode == 0, keyed.stdout + keyed.stderr
    assert "-m pytest -q`" in keyed.stdout and "warning" not in keyed.stdout
    after = run_git(repo, "for-each-ref") + run_git(repo, "status", "--porcelain", "--ignored")
    assert after == before


@pytest.mark.parametrize("name", GOAL_MISSIONS)
def test_every_shipped_template_runs_on_a_python_repo_as_shipped(name: str, tmp_path: Path) -> None:
    repo = python_repo(tmp_path / "repo")
    env = {"ANTHROPIC_API_KEY": "sk-x", "PD_HOME": str(tmp_path)}
    result = pd("validate", str(SHIPPED / name), "--repo", str(repo), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(detected: pytest:" in result.stdout


def test_nothing_fits_is_exit_2_naming_the_field_and_the_fix(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "notes\n", "tests/test_x.py": ""})
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # not committed
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "A"}], {}, test_command=None)
    home = tmp_path / "home"
    home.mkdir()
    before = run_git(repo, "for-each-ref") + run_git(repo, "status", "--porcelain", "--ignored")

    result = pd("validate", str(mission), "--repo", str(repo), cwd=home, env={"PD_HOME": str(home)})

    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(mission) in lines[0] and "test_command" in lines[0]
    assert "fix: set test_command" in lines[0]
    after = run_git(repo, "for-each-ref") + run_git(repo, "status", "--porcelain", "--ignored")
    assert after == before and list(home.iterdir()) == []


def test_a_detected_command_whose_program_is_missing_says_so(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"go.mod": "module x\n"})
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "A"}], {}, test_command=None)
    bin_dir = tmp_path / "bin"  # a PATH with git and nothing else
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "git")
    env = {"PD_HOME": str(tmp_path), "PATH": str(bin_dir)}
    result = pd("validate", str(mission), "--repo", str(repo), cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "'go' not found" in result.stderr and "detected" in result.stderr
    assert "test_command" in result.stderr


def test_a_run_gates_with_the_detected_command_and_says_so_first(tmp_path: Path) -> None:
    shared, read_write = shared_dir(tmp_path)
    mark = shared / "gate-ran"
    suite = f"from pathlib import Path\n\ndef test_x():\n    Path({str(mark)!r}).touch()\n"
    repo = make_repo(tmp_path / "repo", {**PYTEST_SUITE, "tests/test_x.py": suite})
    write = {"name": "write_file", "input": {"path": "notes.md", "content": "hi\n"}}
    tasks = [{"id": "a", "title": "A", "role": "backend-dev"}]
    cassette = {"a": [[{"tool_calls": [write]}, finish_turn()]]}
    mission = write_mission(tmp_path / "m", tasks, cassette, test_command=None, sandbox=read_write)
    # the gate's `python` must be one that has pytest: this interpreter's
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {"PD_HOME": str(tmp_path / "home"), "PATH": path}

    result = pd("run", str(mission), "--repo", str(repo), cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert "tests: python" in first and "-m pytest -q (detected: pytest:" in first, first
    assert mark.exists()  # the gate really ran the repository's pytest suite
