"""A toolbox that offers selected skills, plus ``finish`` and ``discover_skills``.

The agent loop asks for ``specs()`` every turn, so skills that ``discover_skills`` adds
are offered from the next turn on. What was offered and what was used stays on the
toolbox for the attempt's result and the report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from orchestrator.errors import ToolError
from orchestrator.team.skills.registry import ALIASES, Skill, SkillRegistry
from orchestrator.team.tools import FINISH, Ending, Toolbox, ToolResult

MAX_OFFERED = 12  # selected skills plus discovered ones; finish and discover not counted
DISCOVER_PER_CALL = 3
_DISCOVER = {
    "name": "discover_skills",
    "description": (
        "Ask for more tools when the ones you have do not fit, e.g. 'run the linter' or "
        "'git blame'. Matching tools are added from your next turn on."
    ),
    "input_schema": {
        "type": "object",
        "properties": {"need": {"type": "string", "description": "What you need to do."}},
        "required": ["need"],
        "additionalProperties": False,
    },
}
_CONFIRM = {
    "type": "boolean",
    "description": "Must be true: this call changes things that are hard to undo.",
}


class SkillToolbox(Toolbox):
    """The selected ``skills`` as tools; ``catalog`` (if given) backs ``discover_skills``."""

    def __init__(
        self,
        root: Path,
        skills: Iterable[Skill],
        *,
        catalog: SkillRegistry | None = None,
        test_command: str | None = None,
        env: Mapping[str, str] | None = None,
        command_timeout: float = 300,
        output_cap: int = 20_000,
        ending: Ending = FINISH,
    ) -> None:
        super().__init__(root, env, command_timeout, output_cap, ending)
        self.catalog = catalog
        self.test_command = test_command
        self.offered: dict[str, Skill] = {}
        for skill in skills:
            self.offered[skill.id] = skill

    def specs(self) -> list[dict[str, Any]]:
        specs = [_spec(s) for s in self.offered.values()]
        extra = [_DISCOVER] if self.catalog is not None else []
        return [*specs, *(dict(s) for s in extra), dict(self.ending.spec)]

    def _lookup(self, name: str) -> tuple[dict[str, Any], Callable[..., ToolResult]] | None:
        name = name if name in self.offered else ALIASES.get(name, name)
        if name == self.ending.name:
            return self.ending.spec, self.end
        if name == "discover_skills" and self.catalog is not None:
            return _DISCOVER, self.discover_skills
        skill = self.offered.get(name)
        if skill is None or skill.function is None:
            return None
        return _spec(skill), functools.partial(_run_skill, skill, self)

    def _check(self, spec: dict[str, Any], given: Any) -> None:
        if not isinstance(given, dict):
            raise ToolError(f"{spec['name']}: input must be an object")
        present = {k: v for k, v in given.items() if v is not None}  # null: the default
        error = best_match(Draft202012Validator(spec["input_schema"]).iter_errors(present))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise ToolError(f"{spec['name']}: {where + ': ' if where else ''}{error.message}")

    def discover_skills(self, need: str) -> ToolResult:
        assert self.catalog is not None
        added: list[Skill] = []
        for found in self.catalog.search(need):
            if len(added) >= DISCOVER_PER_CALL or len(self.offered) >= MAX_OFFERED:
                break
            if found.id in self.offered:
                continue
            bring = [self.catalog.skills[i] for i in self.catalog.closure(found.id)]
            bring = [s for s in bring if s.id not in self.offered]
            clash = set().union(*(self.catalog.conflicts_of(s.id) for s in bring))
            if clash & set(self.offered) or len(self.offered) + len(bring) > MAX_OFFERED:
                continue
            for skill in bring:
                self.offered[skill.id] = skill
                added.append(skill)
        if not added:
            have = ", ".join(self.offered)
            return ToolResult(f"no further tools match {need!r}; you have: {have}")
        lines = [f"- {s.id}: {s.short_description}" for s in added]
        return ToolResult("added from your next turn on:\n" + "\n".join(lines))


def _spec(skill: Skill) -> dict[str, Any]:
    """The manifest's spec; a skill that needs confirmation takes ``confirm: true``."""
    spec = skill.spec()
    if not skill.requires_confirmation:
        return spec
    schema = dict(spec["input_schema"])
    schema["properties"] = {**schema.get("properties", {}), "confirm": _CONFIRM}
    schema["required"] = [*schema.get("required", []), "confirm"]
    return {**spec, "input_schema": schema}


def _run_skill(skill: Skill, box: SkillToolbox, **args: Any) -> ToolResult:
    if skill.requires_confirmation and args.pop("confirm", False) is not True:
        raise ToolError(f"{skill.id} needs confirm: true; check the arguments and call again")
    assert skill.function is not None
    return skill.function(box, **args)
