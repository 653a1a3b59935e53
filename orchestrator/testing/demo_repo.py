"""The sample repository ``pd demo`` runs on: a small Python package with real tests."""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import BadInput
from orchestrator.system.gitutil import git, identity_env

README = """\
# textkit

Small text helpers.

## Usage

(to be written)
"""

FILES = {
    "README.md": README,
    ".gitignore": "__pycache__/\n*.pyc\n.pytest_cache/\n",
    "pyproject.toml": """\
[project]
name = "textkit"
version = "0.1.0"
requires-python = ">=3.9"

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["src"]
""",
    "src/textkit/__init__.py": '"""Small text helpers."""\n\nfrom textkit.core import '
    'normalize_space\n\n__all__ = ["normalize_space"]\n',
    "src/textkit/core.py": '''\
"""Whitespace handling shared by the other helpers."""


def normalize_space(text: str) -> str:
    """Collapse every run of whitespace into one space and trim the ends."""
    return " ".join(text.split())
''',
    "tests/test_core.py": """\
from textkit.core import normalize_space


def test_collapses_runs_of_whitespace():
    assert normalize_space("a  b\\t\\nc") == "a b c"


def test_trims_the_ends():
    assert normalize_space("  a ") == "a"
""",
}


def create_sample_repo(path: Path) -> Path:
    """Write the sample package into ``path`` (new or empty) and commit it on ``main``."""
    path.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    env = identity_env("pd demo", "pd-demo@localhost")
    git(path, "init", "-q", "-b", "main", env=env)
    git(path, "add", "-A", env=env)
    git(path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "textkit: first version", env=env)
    return path


def fresh_dir(wanted: Path, explicit: bool) -> Path:
    """``wanted`` if it is free; otherwise (for the default name) the next free sibling."""
    if not wanted.exists() or (wanted.is_dir() and not any(wanted.iterdir())):
        return wanted
    if explicit:
        raise BadInput(
            "--dir",
            f"{wanted} exists and is not empty",
            "name a new folder for the sample repository",
        )
    n = 2
    while (candidate := wanted.with_name(f"{wanted.name}-{n}")).exists():
        n += 1
    return candidate
