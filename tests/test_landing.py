"""The merger's refusals of what must never land, against real commits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.engine import landing
from tests.conftest import make_repo, run_git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"src/a.py": "a = 1\n", ".gitignore": "x\n"})


def _branch(repo: Path, make: dict[str, str | None]) -> tuple[str, str]:
    """(target head, a commit on top): ``make`` maps a path to its text, ``"->x"`` to a
    symlink to x, None to a deletion."""
    old = run_git(repo, "rev-parse", "HEAD")
    for name, what in make.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if what is None:
            path.unlink()
        elif what.startswith("->"):
            os.symlink(what[2:], path)
        else:
            path.write_text(what)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "change")
    return old, run_git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    "target", ["/", "/etc/passwd", "../..", "../../x", "a/../../../y", "~/.ssh"]
)
def test_a_symlink_outside_the_repository_never_lands(repo: Path, target: str) -> None:
    old, new = _branch(repo, {"src/link": f"->{target}"})
    reason = landing.refusal(repo, old, new, symlinks="inside")
    assert reason is not None and "outside the repository" in reason and "src/link" in reason


def test_a_symlink_inside_lands_only_when_the_mission_allows_it(repo: Path) -> None:
    old, new = _branch(repo, {"src/link": "->a.py", "top": "->src/a.py"})
    refused = landing.refusal(repo, old, new)
    assert refused is not None and "sandbox.symlinks" in refused
    assert landing.refusal(repo, old, new, symlinks="inside") is None


def test_a_symlink_into_dot_git_never_lands(repo: Path) -> None:
    old, new = _branch(repo, {"conf": "->.git/config"})
    reason = landing.refusal(repo, old, new, symlinks="inside")
    assert reason is not None and ".git" in reason


@pytest.mark.parametrize(
    "name", [".gitattributes", "src/.gitattributes", ".gitmodules", ".githooks/pre-commit"]
)
def test_git_plumbing_is_refused_unless_the_mission_names_it(repo: Path, name: str) -> None:
    old, new = _branch(repo, {name: "* filter=evil\n"})
    reason = landing.refusal(repo, old, new)
    assert reason is not None and name in reason and "sandbox.git_files" in reason
    allowed = name.split("/")[-2] if name.startswith(".githooks") else name.split("/")[-1]
    assert landing.refusal(repo, old, new, git_files=[allowed]) is None


def test_removing_plumbing_is_a_change_too(repo: Path) -> None:
    _branch(repo, {".gitattributes": "*.py text\n"})
    old, new = _branch(repo, {".gitattributes": None})
    assert landing.refusal(repo, old, new) is not None


def test_ordinary_changes_and_gitignore_land(repo: Path) -> None:
    old, new = _branch(repo, {"src/b.py": "b = 2\n", ".gitignore": "x\ny\n", "src/a.py": None})
    assert landing.refusal(repo, old, new) is None
    assert {c.path for c in landing.changes(repo, old, new)} == {
        "src/b.py",
        ".gitignore",
        "src/a.py",
    }
