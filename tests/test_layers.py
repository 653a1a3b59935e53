"""The packages of ``orchestrator`` import one way, down: a package may import only the
packages below it (DESIGN.md, "Layout"). An upward import is how a layered engine
quietly becomes a ball of mud, so it fails here, naming the file and the line."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator

ROOT = Path(orchestrator.__file__).parent
# Lowest first. A package may import itself, anything on a lower line, never its peers.
LAYERS: list[set[str]] = [
    {"errors", "data"},
    {"system", "wire"},
    {"record"},
    {"providers"},
    {"team"},
    {"spec"},
    {"tasks"},
    {"agent", "limits"},
    {"planning", "gate"},
    {"engine"},
    {"testing"},
    {"cli"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """Every ``orchestrator.<package>`` a module imports, with its line (also the ones
    inside functions and under ``TYPE_CHECKING``: a dependency all the same)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [(node.lineno, n.split(".")[1]) for n in names if n.startswith("orchestrator.")]
    return found


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - LEVEL.keys() == set()
    modules = {p.stem for p in ROOT.glob("*.py")}
    assert modules == {"__init__", "__main__", "errors"}, "the top level holds packages"


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if len(parts) < 2:
            continue
        mine = parts[0]
        for line, other in imported_packages(path):
            if other != mine and LEVEL[other] >= LEVEL[mine]:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line}: {mine} imports {other}")
    assert upward == []
