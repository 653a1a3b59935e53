"""Test, lint and format skills: the mission's command, or the one the project uses.

Detection reads the worktree's project files (pyproject, package.json, Cargo.toml,
go.mod, Makefile) and checks that the tool is on the agent's ``PATH``; when nothing fits,
the answer says what was looked for, so the model never guesses at a command.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import ToolError
from orchestrator.team.tools import Toolbox, ToolResult


@dataclass(frozen=True)
class Tool:
    """One candidate: its name, when it applies, and its command line."""

    name: str
    applies: Callable[[Toolbox], bool]
    command: Callable[[str], str]  # "" or " <quoted path>" -> command line
    binary: str


def _has(*names: str) -> Callable[[Toolbox], bool]:
    return lambda box: any((box.root / n).exists() for n in names)


def _in_file(name: str, pattern: str) -> Callable[[Toolbox], bool]:
    def check(box: Toolbox) -> bool:
        path = box.root / name
        return path.is_file() and re.search(pattern, path.read_text(errors="replace")) is not None

    return check


def _python(box: Toolbox) -> bool:
    return _has("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")(box) or any(
        box.root.glob("*.py")
    )


def _npm_script(script: str) -> Callable[[Toolbox], bool]:
    def check(box: Toolbox) -> bool:
        try:
            data = json.loads((box.root / "package.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and script in (data.get("scripts") or {})

    return check


def _npm_dep(name: str) -> Callable[[Toolbox], bool]:
    return _in_file("package.json", rf'"{re.escape(name)}"\s*:')


TESTS = [
    Tool("pytest", _python, lambda a: f"python -m pytest -q{a}", "python"),
    Tool(
        "npm test",
        _npm_script("test"),
        lambda a: f"npm test --silent{' --' + a if a else ''}",
        "npm",
    ),
    Tool("cargo test", _has("Cargo.toml"), lambda a: f"cargo test{a}", "cargo"),
    Tool("go test", _has("go.mod"), lambda a: f"go test{a or ' ./...'}", "go"),
    Tool("make test", _in_file("Makefile", r"(?m)^test\s*:"), lambda a: "make test", "make"),
]
LINTERS = [
    Tool("ruff", _python, lambda a: f"ruff check{a}", "ruff"),
    Tool("flake8", _python, lambda a: f"flake8{a}", "flake8"),
    Tool("eslint", _npm_dep("eslint"), lambda a: f"npx --no-install eslint{a or ' .'}", "npx"),
    Tool("cargo clippy", _has("Cargo.toml"), lambda a: "cargo clippy -q", "cargo-clippy"),
    Tool("go vet", _has("go.mod"), lambda a: "go vet ./...", "go"),
]
FORMATTERS = [
    Tool("ruff format", _python, lambda a: f"ruff format{a}", "ruff"),
    Tool("black", _python, lambda a: f"black -q{a or ' .'}", "black"),
    Tool(
        "prettier",
        _npm_dep("prettier"),
        lambda a: f"npx --no-install prettier -w{a or ' .'}",
        "npx",
    ),
    Tool("cargo fmt", _has("Cargo.toml"), lambda a: "cargo fmt", "cargo-fmt"),
    Tool("gofmt", _has("go.mod"), lambda a: f"gofmt -w{a or ' .'}", "gofmt"),
]


def detect(box: Toolbox, tools: list[Tool]) -> Tool | None:
    """The first tool that fits the project and is installed."""
    path = box.env.get("PATH", "")
    for tool in tools:
        if tool.applies(box) and shutil.which(tool.binary, path=path):
            return tool
    return None


def _none_found(kind: str, tools: list[Tool]) -> ToolResult:
    names = ", ".join(t.name for t in tools)
    return ToolResult(
        f"no {kind} found for this project (looked for {names}: project files and PATH); "
        "use run_command if the project has its own",
        is_error=True,
    )


def _arg(box: Toolbox, path: str | None) -> str:
    """A confined path as a quoted command-line argument, or ""."""
    return f" {shlex.quote(box.rel(box.resolve(path)))}" if path else ""


def _report(name: str, command: str, box: Toolbox, timeout: float | None = None) -> ToolResult:
    res = box.run(command, timeout)
    verdict = "passed" if res.ok else f"FAILED (exit code {res.returncode})"
    return ToolResult(f"{name}: `{command}` {verdict}\n{res.output}", is_error=not res.ok)


def run_tests(box: Toolbox, target: str | None = None, timeout: float | None = None) -> ToolResult:
    """The mission's test command (the one the gate runs), else the detected runner."""
    mission = getattr(box, "test_command", None)
    if mission:
        if target:
            raise ToolError(
                "this project's tests run as one command (the merge gate's); "
                "drop target, or use run_command for a narrower run"
            )
        return _report("tests", mission, box, timeout)
    tool = detect(box, TESTS)
    if tool is None:
        return _none_found("test runner", TESTS)
    return _report(tool.name, tool.command(_arg(box, target)), box, timeout)


def run_linter(box: Toolbox, path: str | None = None) -> ToolResult:
    tool = detect(box, LINTERS)
    if tool is None:
        return _none_found("linter", LINTERS)
    return _report(tool.name, tool.command(_arg(box, path)), box)


def run_formatter(box: Toolbox, path: str | None = None) -> ToolResult:
    tool = detect(box, FORMATTERS)
    if tool is None:
        return _none_found("formatter", FORMATTERS)
    return _report(tool.name, tool.command(_arg(box, path)), box)
