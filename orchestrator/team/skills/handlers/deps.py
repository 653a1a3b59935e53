"""The dependency skill: what the project declares, read from its own files."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from typing import Any

from orchestrator.errors import ToolError
from orchestrator.team.tools import Toolbox, ToolResult


def _pyproject(text: str) -> dict[str, list[str]]:
    data = tomllib.loads(text)
    project = data.get("project", {})
    groups = {"dependencies": list(project.get("dependencies", []))}
    for extra, deps in project.get("optional-dependencies", {}).items():
        groups[f"optional [{extra}]"] = list(deps)
    for name, deps in data.get("dependency-groups", {}).items():
        groups[f"group [{name}]"] = [d for d in deps if isinstance(d, str)]
    poetry = data.get("tool", {}).get("poetry", {})
    if poetry.get("dependencies"):
        groups["poetry"] = [_pin(k, v) for k, v in poetry["dependencies"].items()]
    return groups


def _requirements(text: str) -> dict[str, list[str]]:
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return {"requirements": [line for line in lines if line and not line.startswith("-")]}


def _package_json(text: str) -> dict[str, list[str]]:
    data = json.loads(text)
    keys = ("dependencies", "devDependencies", "peerDependencies", "optionalDependencies")
    return {k: [_pin(n, v) for n, v in (data.get(k) or {}).items()] for k in keys}


def _cargo(text: str) -> dict[str, list[str]]:
    data = tomllib.loads(text)
    keys = ("dependencies", "dev-dependencies", "build-dependencies")
    return {k: [_pin(n, v) for n, v in data.get(k, {}).items()] for k in keys}


def _go_mod(text: str) -> dict[str, list[str]]:
    blocks = re.findall(r"(?ms)^require\s*\((.*?)\)", text)
    single = re.findall(r"(?m)^require\s+([^\s(].*)$", text)
    lines = [x.strip() for b in blocks for x in b.splitlines()] + single
    return {"require": [x.split("//")[0].strip() for x in lines if x and not x.startswith("//")]}


def _pin(name: str, spec: Any) -> str:
    if isinstance(spec, dict):
        spec = spec.get("version", "") or ", ".join(f"{k}={v}" for k, v in spec.items())
    return f"{name} {spec}".strip()


PARSERS: dict[str, Callable[[str], dict[str, list[str]]]] = {
    "pyproject.toml": _pyproject,
    "requirements.txt": _requirements,
    "requirements-dev.txt": _requirements,
    "package.json": _package_json,
    "Cargo.toml": _cargo,
    "go.mod": _go_mod,
}


def list_dependencies(box: Toolbox, path: str = ".") -> ToolResult:
    """Declared dependencies from pyproject, requirements, package.json, Cargo.toml, go.mod."""
    folder = box.resolve(path)
    if not folder.is_dir():
        raise ToolError(f"{path!r} is not a folder")
    sections: list[str] = []
    for name, parse in PARSERS.items():
        rel = box.rel(folder / name)
        real = box.resolve(rel)  # a symlinked manifest must stay inside the worktree
        if not real.is_file():
            continue
        try:
            groups = parse(real.read_text(errors="replace"))
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            sections.append(f"{rel}: cannot parse ({exc})")
            continue
        body = [f"  {group}: {', '.join(deps)}" for group, deps in groups.items() if deps]
        sections.append(f"{rel}:\n" + ("\n".join(body) or "  (no dependencies declared)"))
    if not sections:
        looked = ", ".join(PARSERS)
        return ToolResult(f"no dependency files in {box.rel(folder)} (looked for {looked})")
    return ToolResult("\n".join(sections))
