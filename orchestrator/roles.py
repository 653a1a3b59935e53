"""Roles: markdown files with YAML front matter that say who an agent is.

The catalog is the shipped ``roles/`` folder plus, overriding it, a ``roles/`` folder in
the workspace, so a team can adapt a role without forking pd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestrator.errors import BadInput
from orchestrator.mission import shipped_dir

COMMON_RULES = """\
Rules for every role:
- Work only inside your worktree; it is a git checkout of the target branch.
- Keep changes small and focused on your task; do not reformat unrelated code.
- Run the project's tests before you finish; work that breaks them is rejected.
- Do not commit: pd commits your work when you call `finish`.
- Finish with a summary another engineer can rely on: what changed and why.
"""


@dataclass
class Role:
    """One role of the catalog, with the prompt body that becomes the agent's identity."""

    id: str
    name: str
    description: str
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
    text = path.read_text()
    if not text.startswith("---"):
        raise BadInput(str(path), "no front matter", "start the file with a '---' YAML block")
    try:
        _, front, body = text.split("---", 2)
        meta = yaml.safe_load(front) or {}
    except (ValueError, yaml.YAMLError) as exc:
        raise BadInput(
            str(path),
            f"front matter is not valid YAML ({exc})",
            "close it with '---' and fix the YAML",
        ) from None
    for key in ("id", "name", "description"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise BadInput(str(path), "missing or empty", "add a one-line string", key)
    if meta["id"] != path.stem:
        raise BadInput(
            str(path),
            f"id '{meta['id']}' differs from the file name",
            f"rename the file to {meta['id']}.md or set id: {path.stem}",
            "id",
        )
    known = {"id", "name", "description", "capabilities", "owns", "tier", "skills"}
    extra = sorted(set(meta) - known)
    if extra:
        raise BadInput(
            str(path), "unknown field", f"use only: {', '.join(sorted(known))}", extra[0]
        )
    for key in ("capabilities", "owns", "skills"):
        value = meta.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(str(path), "must be a list of strings", "write it as [a, b]", key)
    return Role(
        id=meta["id"],
        name=meta["name"],
        description=meta["description"],
        capabilities=meta.get("capabilities", []),
        owns=meta.get("owns", []),
        tier=str(meta.get("tier", "sonnet")),
        skills=meta.get("skills", []),
        body=body,
        path=path,
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
