"""Roles: markdown files with YAML front matter that say who an agent is.

The catalog is the shipped ``roles/`` folder plus, overriding it, a ``roles/`` folder in
the workspace, so a team can adapt a role without forking pd.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.errors import BadInput
from orchestrator.team.catalog import shipped_dir

# A role belongs to one group; its tier picks its model (cheap, balanced, top).
BUILDER = "builder"
COORDINATION = "coordination"
GROUPS = (BUILDER, COORDINATION)

TIERS = ("haiku", "sonnet", "opus")  # cheap, balanced, top
TOP_TIER = "opus"
CHEAP_TIER = "haiku"
DEFAULT_TIER = {BUILDER: "sonnet", COORDINATION: "haiku"}

COMMON_RULES = """\
Rules for every role:
- Work only inside your worktree; it is a git checkout of the target branch.
- Keep changes small and focused on your task; do not reformat unrelated code.
- Run the project's tests before you finish; work that breaks them is rejected.
- Do not commit: pd commits your work when you call `finish`.
- Finish with a summary another engineer can rely on: what changed and why.
"""

SECTIONS = ("Rules", "Task format", "Handoff format", "Example tasks")
FIELDS = {"id", "name", "description", "group", "capabilities", "owns", "tier", "skills"}
# The capability tags the shipped roles use; a task's ``capabilities`` name some of them.
# Workspace roles may add their own.
CAPABILITY_TAGS = (
    "writes-code",
    "writes-tests",
    "reads-tests",
    "runs-tests",
    "writes-docs",
    "git-operations",
    "database",
    "browser",
    "styles",
    "accessibility",
    "ci",
    "refactors",
    "debugs",
    "profiles",
    "security",
    "dependencies",
    "reviews-code",
    "plans",
    "designs",
    "triages",
    "releases",
)
_HEADING = re.compile(r"^## +(.+?)\s*$", re.MULTILINE)


@dataclass
class Role:
    """One role of the catalog, with the prompt body that becomes the agent's identity."""

    id: str
    name: str
    description: str
    group: str = "builder"  # builder | coordination (see composition.py)
    capabilities: list[str] = field(default_factory=list)
    owns: list[str] = field(default_factory=list)
    tier: str = "sonnet"
    skills: list[str] = field(default_factory=list)
    body: str = ""
    path: Path | None = None

    def system_prompt(self) -> str:
        identity = f"You are the {self.name} of a software team."
        return f"{identity}\n\n{self.body.strip()}\n\n{COMMON_RULES}"


def parse_role(path: Path) -> Role:
    """Parse one role file; a broken one is a one-line ``BadInput`` naming file and field."""
    meta, body = _split(path)
    _check_meta(path, meta)
    _check_body(path, body)
    group = meta["group"]
    return Role(
        id=meta["id"],
        name=meta["name"],
        description=meta["description"],
        group=group,
        capabilities=meta.get("capabilities", []),
        owns=meta.get("owns", []),
        tier=meta.get("tier", DEFAULT_TIER[group]),
        skills=meta.get("skills", []),
        body=body,
        path=path,
    )


# libyaml's safe loader where PyYAML was built with it: the same documents, parsed in C
# (the pure-Python one spends tens of milliseconds on the shipped roles, every run).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _split(path: Path) -> tuple[dict, str]:
    """Front matter (a YAML mapping) and body."""
    text = path.read_text()
    if not text.startswith("---"):
        raise BadInput(str(path), "no front matter", "start the file with a '---' YAML block")
    try:
        _, front, body = text.split("---", 2)
        meta = yaml.load(front, Loader=_LOADER) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise BadInput(
            str(path),
            f"front matter is not valid YAML ({exc})",
            "close it with '---' and fix the YAML",
        ) from None
    if not isinstance(meta, dict):
        raise BadInput(str(path), "front matter is not a mapping", "write key: value lines")
    return meta, body


def _check_meta(path: Path, meta: dict) -> None:
    where = str(path)
    extra = sorted(set(meta) - FIELDS, key=str)
    if extra:
        raise BadInput(where, "unknown field", f"use only: {', '.join(sorted(FIELDS))}", extra[0])
    for key in ("id", "name", "description"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise BadInput(where, "missing or empty", "add a one-line string", key)
    if "\n" in meta["description"].strip():
        raise BadInput(where, "must be one line", "shorten it to one sentence", "description")
    if meta["id"] != path.stem:
        raise BadInput(
            where,
            f"id '{meta['id']}' differs from the file name",
            f"rename the file to {meta['id']}.md or set id: {path.stem}",
            "id",
        )
    if meta.get("group") not in GROUPS:
        got = "missing" if "group" not in meta else f"'{meta['group']}' is not a group"
        raise BadInput(
            where,
            got,
            "set group: builder (writes code, tests or docs) or group: coordination "
            "(plans, designs, reviews, releases)",
            "group",
        )
    tier = meta.get("tier", DEFAULT_TIER[meta["group"]])
    if not isinstance(tier, str) or not tier.strip() or len(tier.split()) != 1:
        raise BadInput(
            where,
            f"{tier!r} is not a model tier",
            f"use {', '.join(TIERS)} or an exact model id",
            "tier",
        )
    for key in ("capabilities", "owns", "skills"):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(where, "must be a list of strings", "write it as [a, b]", key)


def _check_body(path: Path, body: str) -> None:
    """An identity paragraph, then the sections every role has (others may follow)."""
    headings = list(_HEADING.finditer(body))
    identity = body[: headings[0].start()] if headings else body
    if not identity.strip():
        raise BadInput(
            str(path),
            "no identity paragraph",
            "start the body with a paragraph saying who this role is",
            "body",
        )
    sections = {}
    for here, after in zip(headings, [*headings[1:], None], strict=True):
        sections[here.group(1)] = body[here.end() : after.start() if after else len(body)]
    for name in SECTIONS:
        text = sections.get(name, "")
        if not text.strip():
            problem = "section is empty" if name in sections else "section is missing"
            raise BadInput(str(path), problem, f"add a '## {name}' section", f"## {name}")
    if not re.search(r"^- \S", sections["Example tasks"], re.MULTILINE):
        raise BadInput(
            str(path),
            "no example tasks",
            "list example tasks as '- ' bullets",
            "## Example tasks",
        )


def role_dirs(workspace: Path | None = None) -> list[Path]:
    dirs = [shipped_dir("roles")]
    if workspace is not None and (workspace / "roles").is_dir():
        dirs.append(workspace / "roles")
    return dirs


def load_roles(workspace: Path | None = None) -> dict[str, Role]:
    """Every role by id; later folders override earlier ones."""
    roles: dict[str, Role] = {}
    for folder in role_dirs(workspace):
        for path in sorted(folder.glob("*.md")):
            role = parse_role(path)
            roles[role.id] = role
    return roles
