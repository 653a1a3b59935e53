"""Every shipped role and mission loads; the catalogs are reachable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.spec.mission import load_mission
from orchestrator.team.catalog import shipped_dir
from orchestrator.team.roles import load_roles, parse_role
from tests.conftest import pd

ROLE_FILES = sorted(shipped_dir("roles").glob("*.md"))
MISSION_FILES = sorted(
    p for p in shipped_dir("missions").glob("*.json") if not p.name.endswith(".cassette.json")
)


@pytest.mark.parametrize("path", ROLE_FILES, ids=lambda p: p.stem)
def test_every_shipped_role_loads(path: Path) -> None:
    role = parse_role(path)
    assert role.id == path.stem and role.capabilities and role.body.strip()
    assert role.system_prompt().count("Rules for every role") == 1


@pytest.mark.parametrize("path", MISSION_FILES, ids=lambda p: p.stem)
def test_every_shipped_mission_loads_with_known_roles(path: Path) -> None:
    mission = load_mission(path)
    roles = load_roles()
    assert all(member.role in roles for member in mission.team)
    assert all(task.role in roles for task in mission.tasks if task.role)


def test_skill_schema_is_shipped_json() -> None:
    schema = json.loads((shipped_dir("skills") / "manifest.schema.json").read_text())
    assert "handler" in schema["required"]


def test_broken_role_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "wizard.md"
    path.write_text(
        "---\nid: wizard\nname: Wizard\ndescription: x\ngroup: builder\ncapabilities: nope\n---\n"
    )
    with pytest.raises(BadInput) as caught:
        parse_role(path)
    assert "wizard.md" in str(caught.value) and "capabilities" in str(caught.value)


def test_workspace_roles_override_shipped_ones(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    shipped = (shipped_dir("roles") / "backend-dev.md").read_text()
    (tmp_path / "roles" / "backend-dev.md").write_text(
        shipped.replace("name: Backend Developer", "name: Our Backend Dev")
    )
    assert load_roles(tmp_path)["backend-dev"].name == "Our Backend Dev"


def test_catalog_commands(tmp_path: Path) -> None:
    roles = json.loads(pd("roles", "list", "--json", cwd=tmp_path, check=True).stdout)
    assert {r["id"] for r in roles} >= {"backend-dev", "qa-engineer", "docs-writer"}
    missions = json.loads(pd("missions", "list", "--json", cwd=tmp_path, check=True).stdout)
    assert any(m["name"] == "demo" and m["tasks"] == 6 for m in missions)
    shown = pd("roles", "show", "qa-engineer", cwd=tmp_path, check=True).stdout
    assert "QA Engineer" in shown
    missing = pd("roles", "show", "wizard", cwd=tmp_path)
    assert missing.returncode == 2 and "backend-dev" in missing.stderr
