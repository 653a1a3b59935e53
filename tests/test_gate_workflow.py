"""The GitHub Actions workflow in ``examples/`` does what it says: its own commands, read
from the YAML and run as the runner would, against a bare repository standing in for
GitHub. Only the steps that need GitHub itself are left out (checkout is a clone here,
setup-python and the install are this test's environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import IDENTITY, make_repo, run_git

WORKFLOW = Path(__file__).parent.parent / "examples" / "github" / "pd-gate.yml"
# A Python project with a pytest suite, so the gate's test command is detected.
PROJECT = {
    "pyproject.toml": '[project]\nname = "demo"\nversion = "0"\n',
    "app.txt": "v1\n",
    "tests/test_tree.py": (
        "from pathlib import Path\n\n"
        "def test_nothing_is_broken():\n"
        "    assert not Path('BROKEN').exists(), 'BROKEN is here'\n"
    ),
}


def commands(job: str) -> list[str]:
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"][job]["steps"]
    return [s["run"] for s in steps if "run" in s and s.get("name") != "Install pd"]


def run_steps(job: str, cwd: Path, **env: str) -> list[int]:
    """Each step in its own ``bash -e``, as Actions runs ``run:``; every exit code."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    full = {**os.environ, **IDENTITY, "PATH": path, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", **env}
    codes = []
    for command in commands(job):
        result = subprocess.run(["bash", "-e", "-c", command], cwd=cwd, env=full, timeout=600)
        codes.append(result.returncode)
    return codes


def add_branch(repo: Path, name: str, files: dict[str, str]) -> None:
    run_git(repo, "checkout", "-q", "-b", name, "main")
    for path, text in files.items():
        (repo / path).write_text(text)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", name)
    run_git(repo, "checkout", "-q", "main")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """GitHub's copy: main, and agents' branches pushed to it."""
    seed = make_repo(tmp_path / "seed", PROJECT)
    add_branch(seed, "agent/good", {"good.txt": "ok\n"})
    add_branch(seed, "agent/broken", {"BROKEN": "x\n"})
    add_branch(seed, "agent/clash", {"app.txt": "theirs\n"})
    (seed / "app.txt").write_text("ours\n")
    run_git(seed, "commit", "-q", "-am", "main moves on")
    bare = tmp_path / "origin.git"
    run_git(tmp_path, "clone", "-q", "--bare", str(seed), str(bare))
    return bare


def checkout(origin: Path, where: Path) -> Path:
    """What actions/checkout with fetch-depth 0 leaves: a clone on the default branch."""
    run_git(where.parent, "clone", "-q", str(origin), str(where))
    return where


def test_the_gate_job_lands_what_passes_and_a_rerun_changes_nothing(
    origin: Path, tmp_path: Path
) -> None:
    before = run_git(origin, "rev-parse", "main")
    work = checkout(origin, tmp_path / "runner")

    codes = run_steps("gate", work)

    assert codes[:-1] == [0] * (len(codes) - 1) and codes[-1] == 1  # some were rejected
    main = run_git(origin, "rev-parse", "main")
    assert run_git(origin, "rev-parse", "main^1") == before  # one commit on the old head
    landed = set(run_git(origin, "log", "--format=%s", f"{before}..{main}").splitlines())
    assert any("agent/good" in line for line in landed)
    files = run_git(origin, "ls-tree", "--name-only", "-r", "main").splitlines()
    assert "good.txt" in files and "BROKEN" not in files
    assert (work / "pd-gate.xml").exists()

    again = checkout(origin, tmp_path / "runner-2")
    assert run_steps("gate", again)[-1] == 1  # broken and clash are still refused
    assert run_git(origin, "rev-parse", "main") == main  # and nothing else moved


@pytest.mark.parametrize(("head", "code"), [("agent/good", 0), ("agent/broken", 1)])
def test_the_check_job_answers_for_a_pull_request(
    origin: Path, tmp_path: Path, head: str, code: int
) -> None:
    work = checkout(origin, tmp_path / "runner")
    codes = run_steps("check", work, GITHUB_HEAD_REF=head, GITHUB_BASE_REF="main")
    assert codes[-1] == code
