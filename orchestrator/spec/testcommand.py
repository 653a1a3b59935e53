"""The test command a mission gets when it names none, read from the repository.

pd gates committed trees, so the evidence is the commit being gated (``git ls-tree``),
never the working directory: a file not committed yet is not there. Each rule fires only
on real evidence. When several fit, a Makefile ``test`` target wins (it usually wraps
the project's own setup: a virtualenv, fixtures, flags); then pytest, ``npm test``,
``cargo test``, ``go test ./...``; the reason names the others that fit too.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.system.gitutil import git, git_full

PYTHON_PROJECT = ("pyproject.toml", "setup.cfg", "setup.py", "pytest.ini", "tox.ini")
# The section that says a Python project configures pytest itself, per file.
PYTEST_SECTION = {
    "pyproject.toml": "[tool.pytest.ini_options]",
    "setup.cfg": "[tool:pytest]",
    "tox.ini": "[pytest]",
    "pytest.ini": "[pytest]",
}
NPM_PLACEHOLDER = "no test specified"  # `npm init`'s test script, which fails on purpose
MAKEFILES = ("GNUmakefile", "makefile", "Makefile")  # the order make looks for them
# A rule line: targets, then ':' or '::' (not ':=' or '::=', which assign a variable).
MAKE_RULE = re.compile(r"^(?P<targets>[^\s#=:][^#=:]*?)\s*::?(?!=)")


@dataclass(frozen=True)
class Detected:
    """A test command and why pd chose it ("pytest: pyproject.toml and tests/"); the
    reason is "" for the mission's own command."""

    command: str
    reason: str

    def line(self) -> str:
        """What ``pd validate`` and a run's first line say: "tests: <command> (detected: …)"."""
        why = f" (detected: {self.reason})" if self.reason else ""
        return f"tests: {self.command}{why}"


Read = Callable[[str], str]


def detect_test_command(repo: Path, commit: str) -> Detected | None:
    """The test command of the tree at ``commit`` in ``repo``, or None when nothing fits."""
    listing = git(repo, "ls-tree", "-r", "--name-only", "-z", commit)
    files = {name for name in listing.split("\0") if name}

    def read(path: str) -> str:
        code, out, _ = git_full(repo, "cat-file", "blob", f"{commit}:{path}")
        return out if code == 0 else ""

    return choose(files, read)


def choose(files: set[str], read: Read) -> Detected | None:
    """The first rule that fits, naming the others that fit as well."""
    fits = [found for rule in RULES if (found := rule(files, read)) is not None]
    if not fits:
        return None
    first, others = fits[0], [found.command for found in fits[1:]]
    also = f"; also fits: {', '.join(others)}" if others else ""
    return Detected(first.command, first.reason + also)


def _make(files: set[str], read: Read) -> Detected | None:
    for name in MAKEFILES:
        if name in files:  # make reads only the first one it finds
            has = any(_targets_test(line) for line in read(name).splitlines())
            return Detected("make test", f"make: {name} has a test target") if has else None
    return None


def _targets_test(line: str) -> bool:
    match = MAKE_RULE.match(line)
    return match is not None and "test" in match["targets"].split()


def _pytest(files: set[str], read: Read) -> Detected | None:
    configs = [name for name in PYTHON_PROJECT if name in files]
    tests = _python_tests(files)
    if not configs or not tests:
        return None
    sections = [(n, PYTEST_SECTION[n]) for n in configs if n in PYTEST_SECTION]
    own = [f"{name} {section}" for name, section in sections if section in read(name)]
    return Detected(f"{_python()} -m pytest -q", f"pytest: {(own or configs)[0]} and {tests}")


def _python_tests(files: set[str]) -> str:
    """What shows the project has tests: a top ``tests/`` or ``test/`` folder of Python
    files, else the first ``test_*.py`` or ``*_test.py`` file; "" when there is none."""
    for folder in ("tests", "test"):
        if any(f.startswith(f"{folder}/") and f.endswith(".py") for f in files):
            return f"{folder}/"
    for name in sorted(files):
        base = PurePosixPath(name).name
        if base.endswith(".py") and (base.startswith("test_") or base.endswith("_test.py")):
            return name
    return ""


def _python() -> str:
    """``python`` where there is one (a virtualenv, most setups), else ``python3``
    (Debian and macOS ship only that name)."""
    return "python" if shutil.which("python") or not shutil.which("python3") else "python3"


def _npm(files: set[str], read: Read) -> Detected | None:
    if "package.json" not in files:
        return None
    try:
        scripts = json.loads(read("package.json")).get("scripts") or {}
        script = scripts.get("test")
    except (ValueError, AttributeError):
        return None  # not a package.json npm could read either
    if not isinstance(script, str) or not script.strip() or NPM_PLACEHOLDER in script:
        return None
    shown = script if len(script) <= 40 else script[:39] + "…"
    return Detected("npm test", f"npm: package.json scripts.test is {json.dumps(shown)}")


def _cargo(files: set[str], read: Read) -> Detected | None:
    return Detected("cargo test", "cargo: Cargo.toml") if "Cargo.toml" in files else None


def _go(files: set[str], read: Read) -> Detected | None:
    return Detected("go test ./...", "go: go.mod") if "go.mod" in files else None


RULES: list[Callable[[set[str], Read], Detected | None]] = [_make, _pytest, _npm, _cargo, _go]
