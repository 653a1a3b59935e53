"""Shared fixtures: every test gets its own workspace and a real git repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def run_git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity (CI machines may have none)."""
    env = {**os.environ, **IDENTITY}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """Create a git repository at ``path`` with one commit holding ``files``."""
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", branch)
    for name, text in (files or {"README.md": "hello\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "initial")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's run store out of the real workspace (llm's autouse pattern)."""
    monkeypatch.setenv("PD_HOME", str(tmp_path / "pd-home"))


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh repository on branch ``main`` with one commit."""
    return make_repo(tmp_path / "repo")
