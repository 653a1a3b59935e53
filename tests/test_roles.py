"""The roles catalog: every shipped role is complete, and a broken role file is one line
naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.team.catalog import shipped_dir
from orchestrator.team.roles import (
    BUILDER,
    CAPABILITY_TAGS,
    COMMON_RULES,
    COORDINATION,
    DEFAULT_TIER,
    GROUPS,
    SECTIONS,
    load_roles,
    parse_role,
)

ROLE_FILES = sorted(shipped_dir("roles").glob("*.md"))
# The skills registry's ids (skills/*.json); roles may only list these.
SKILL_IDS = {
    "read_file", "write_file", "edit_file", "apply_patch", "delete_file", "move_file",
    "list_files", "find_files", "search_code", "file_outline", "git_status", "git_diff",
    "git_log", "git_blame", "git_commit", "run_tests", "run_linter", "run_formatter",
    "run_command", "list_dependencies", "todo_scan", "code_stats", "http_get",
}  # fmt: skip
BUILDERS = {
    "backend-dev", "frontend-dev", "full-stack-dev", "database-dev", "library-dev",
    "css-artist", "devops-engineer", "refactorer", "debugger", "test-generator",
    "qa-engineer", "integration-tester", "docs-writer", "dependency-manager",
    "performance-analyst", "security-auditor",
}  # fmt: skip
COORDINATORS = {
    "producer", "architect", "tech-lead", "self-reviewer", "code-reviewer", "release-manager",
}  # fmt: skip


def sections(body: str) -> dict[str, str]:
    parts = re.split(r"^## +(.+?)\s*$", body, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("path", ROLE_FILES, ids=lambda p: p.stem)
def test_every_shipped_role_is_complete(path: Path) -> None:
    role = parse_role(path)
    assert role.group in GROUPS
    assert role.tier == DEFAULT_TIER[role.group]  # coordination cheap, builders balanced
    assert role.capabilities and set(role.capabilities) <= set(CAPABILITY_TAGS)
    assert role.skills and set(role.skills) <= SKILL_IDS, set(role.skills) - SKILL_IDS
    assert len(role.skills) <= 8  # the registry offers 3-8 skills per task
    assert "git_commit" not in role.skills  # pd commits, see COMMON_RULES
    found = sections(role.body)
    assert list(found)[: len(SECTIONS)] == list(SECTIONS)
    examples = [line for line in found["Example tasks"].splitlines() if line.startswith("- ")]
    assert 5 <= len(examples) <= 10
    prompt = role.system_prompt()
    assert prompt.count(COMMON_RULES) == 1 and role.name in prompt


def test_the_catalog_has_every_role_the_missions_need() -> None:
    roles = load_roles()
    assert len(roles) >= 23
    assert {r for r in roles if roles[r].group == BUILDER} >= BUILDERS
    assert {r for r in roles if roles[r].group == COORDINATION} >= COORDINATORS
    assert len({r.description for r in roles.values()}) == len(roles)


def test_a_role_without_tier_gets_its_groups_default(tmp_path: Path) -> None:
    for group in GROUPS:
        path = tmp_path / f"{group}-role.md"
        path.write_text(role_text(id=path.stem, group=group, tier=None))
        assert parse_role(path).tier == DEFAULT_TIER[group]


def test_a_role_may_name_an_exact_model_id(tmp_path: Path) -> None:
    path = tmp_path / "local.md"
    path.write_text(role_text(id="local", tier="qwen3:8b"))
    assert parse_role(path).tier == "qwen3:8b"


GOOD_BODY = """\
You do one thing well.

## Rules
- Be careful.

## Task format
A title.

## Handoff format
What changed.

## Example tasks
- Do the thing.
"""


def role_text(body: str = GOOD_BODY, **front: object) -> str:
    meta = {"id": "wizard", "name": "Wizard", "description": "Casts spells.", "group": "builder"}
    meta |= front
    meta.setdefault("capabilities", "[writes-code]")
    lines = [f"{key}: {value}" for key, value in meta.items() if value is not None]
    return "---\n" + "\n".join(lines) + "\n---\n" + body


BROKEN = {
    "group missing": (role_text(group=None), "group"),
    "group unknown": (role_text(group="wizardry"), "group"),
    "tier with spaces": (role_text(tier="'very fast'"), "tier"),
    "tier not a string": (role_text(tier="[haiku]"), "tier"),
    "capabilities not a list": (role_text(capabilities="writes-code"), "capabilities"),
    "skills not strings": (role_text(skills="[1, 2]"), "skills"),
    "unknown field": (role_text(colour="blue"), "colour"),
    "id differs from file": (role_text(id="warlock"), "id"),
    "name missing": (role_text(name=None), "name"),
    "two-line description": (role_text(description='"one\\ntwo"'), "description"),
    "no rules section": (GOOD_BODY.replace("## Rules", "## Rulez"), "## Rules"),
    "empty handoff section": (
        GOOD_BODY.replace("What changed.\n", ""),
        "## Handoff format",
    ),
    "examples not bullets": (
        GOOD_BODY.replace("- Do the thing.", "Do the thing."),
        "## Example tasks",
    ),
    "no identity": (GOOD_BODY.split("\n\n", 1)[1], "body"),
}


@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_a_broken_role_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    text, field = BROKEN[case]
    if not text.startswith("---"):
        text = role_text(body=text)
    path = tmp_path / "wizard.md"
    path.write_text(text)
    with pytest.raises(BadInput) as caught:
        parse_role(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and caught.value.field == field


@pytest.mark.parametrize("path", ROLE_FILES[:3] + ROLE_FILES[-3:], ids=lambda p: p.stem)
def test_a_shipped_role_with_a_broken_group_names_it(tmp_path: Path, path: Path) -> None:
    broken = tmp_path / path.name
    broken.write_text(re.sub(r"^group: .*$", "group: boss", path.read_text(), flags=re.M))
    with pytest.raises(BadInput) as caught:
        parse_role(broken)
    assert caught.value.field == "group" and path.name in str(caught.value)


def test_a_broken_workspace_role_stops_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "wizard.md").write_text(role_text(group="sorcery"))
    with pytest.raises(BadInput, match=r"wizard\.md: group"):
        load_roles(tmp_path)
