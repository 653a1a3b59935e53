"""The skill catalog: JSON manifests in ``skills/``, validated, with importable handlers.

Like roles, the catalog is the shipped ``skills/`` folder plus, overriding it by id, a
``skills/`` folder in the workspace. Every manifest is checked against
``manifest.schema.json`` when it loads, its handler is imported, and its ``requires``,
``conflicts`` and ``enhanced_by`` must name known skills, so a broken catalog fails at
load with one line naming the file and the field, never in the middle of a task.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import best_match

from orchestrator.errors import BadInput
from orchestrator.team.catalog import shipped_dir

SCHEMA_NAME = "manifest.schema.json"
# Names the core tools had before skills; roles and cassettes written then still work.
ALIASES = {"search_files": "search_code"}
_STOP_WORDS = (
    "the and for with from into that this what when where which have need want then than "
    "all any are not can how its our use you your was were will should would could "
    "file files code some make sure also run"
)
_STOP = frozenset(_STOP_WORDS.split())


def words(text: str) -> set[str]:
    """Lower-case keywords of ``text``, with plural and -ing/-ed endings cut."""
    found = set()
    for word in re.findall(r"[a-z][a-z0-9]+", text.lower().replace("_", " ")):
        if len(word) < 3 or word in _STOP:
            continue
        for end in ("ing", "ed", "es", "s"):
            if word.endswith(end) and len(word) - len(end) >= 3:
                word = word[: -len(end)]
                break
        found.add(word)
    return found


@dataclass
class Skill:
    """One manifest, with its handler resolved to a callable ``(toolbox, **input)``."""

    id: str
    name: str
    version: str
    description: str
    short_description: str
    tags: list[str]
    category: str
    parameters: dict[str, Any]
    handler: str
    trigger_examples: list[str] = field(default_factory=list)
    requires: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    enhanced_by: list[str] = field(default_factory=list)
    side_effects: str = "none"
    idempotent: bool = True
    requires_confirmation: bool = False
    path: Path | None = field(default=None, compare=False)
    function: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def spec(self) -> dict[str, Any]:
        """The tool definition the model sees."""
        return {"name": self.id, "description": self.description, "input_schema": self.parameters}

    def keywords(self) -> set[str]:
        text = " ".join(
            [
                self.id,
                self.name,
                self.short_description,
                self.category,
                *self.tags,
                *self.trigger_examples,
            ]
        )
        return words(text)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("path", "function")}
        return {**data, "path": str(self.path) if self.path else None}


class SkillRegistry:
    """Skills by id, with a keyword index for selection and ``discover_skills``."""

    def __init__(self, skills: Iterable[Skill]) -> None:
        self.skills: dict[str, Skill] = {s.id: s for s in skills}
        self._keywords = {s.id: s.keywords() for s in self.skills.values()}
        self._conflicts: dict[str, set[str]] = {i: set() for i in self.skills}
        for skill in self.skills.values():  # a conflict binds both ways
            for other in skill.conflicts:
                self._conflicts[skill.id].add(other)
                self._conflicts.setdefault(other, set()).add(skill.id)

    def __len__(self) -> int:
        return len(self.skills)

    def __contains__(self, skill_id: object) -> bool:
        return isinstance(skill_id, str) and ALIASES.get(skill_id, skill_id) in self.skills

    def get(self, skill_id: str) -> Skill:
        real = ALIASES.get(skill_id, skill_id)
        if real not in self.skills:
            raise BadInput(
                skill_id, "no such skill", f"use one of: {', '.join(sorted(self.skills))}"
            )
        return self.skills[real]

    def conflicts_of(self, skill_id: str) -> set[str]:
        return self._conflicts.get(skill_id, set())

    def closure(self, skill_id: str) -> list[str]:
        """The skill and everything it requires, transitively; the skill itself first."""
        order, todo = [], [skill_id]
        while todo:
            current = todo.pop(0)
            if current not in order:
                order.append(current)
                todo.extend(self.skills[current].requires)
        return order

    def by_tag(self, tag: str) -> list[Skill]:
        return [s for s in self.skills.values() if tag in s.tags]

    def score(self, skill_id: str, query_words: set[str]) -> int:
        """How many of the query's keywords the skill's id, tags and examples share."""
        return len(self._keywords[skill_id] & query_words)

    def search(self, query: str) -> list[Skill]:
        """Skills matching ``query`` best first: exact id, then shared keywords."""
        asked = words(query)
        exact = {ALIASES.get(w, w) for w in query.lower().split()}
        scored = [
            (100 * (s.id in exact) + self.score(s.id, asked), s.id) for s in self.skills.values()
        ]
        return [self.skills[i] for score, i in sorted(scored, key=lambda x: (-x[0], x[1])) if score]


def skill_dirs(workspace: Path | None = None) -> list[Path]:
    """The shipped folder, then the workspace's (which overrides by id)."""
    dirs = [shipped_dir("skills")]
    if workspace is not None and (workspace / "skills").is_dir():
        extra = workspace / "skills"
        if extra.resolve() != dirs[0].resolve():
            dirs.append(extra)
    return dirs


def load_registry(workspace: Path | None = None, dirs: list[Path] | None = None) -> SkillRegistry:
    """Every skill of ``dirs`` (default: ``skill_dirs(workspace)``), validated."""
    schema = (shipped_dir("skills") / SCHEMA_NAME).read_text()
    validator = Draft202012Validator(json.loads(schema))
    skills: dict[str, Skill] = {}
    for folder in dirs if dirs is not None else skill_dirs(workspace):
        for path in sorted(folder.glob("*.json")):
            if path.name != SCHEMA_NAME:
                skill = parse_skill(path, validator, schema)
                skills[skill.id] = skill
    for skill in skills.values():
        _check_references(skill, skills)
    registry = SkillRegistry(skills.values())
    for skill in skills.values():
        _check_closure(skill, registry)
    return registry


# Manifests (with the schema they passed) already validated in this process, or in the
# forkserver it was forked from (``engine.prewarm``): the same text against the same
# schema gives the same answer, and the check costs a worker tenths of a second of CPU.
_VALIDATED: set[tuple[str, str, str]] = set()


def parse_skill(path: Path, validator: Draft202012Validator, schema: str = "") -> Skill:
    """One manifest; a broken one is a one-line ``BadInput`` naming the file and field.
    ``schema``: the validator's schema text, to remember a manifest that passed it."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            str(path), f"not valid JSON (line {exc.lineno}: {exc.msg})", "fix the JSON syntax"
        ) from None
    key = (str(path), schema, text)
    if schema and key in _VALIDATED:
        return _build(path, data)
    _validate(path, data, validator)
    skill = _build(path, data)
    if schema:
        _VALIDATED.add(key)
    return skill


def _validate(path: Path, data: Any, validator: Draft202012Validator) -> None:
    error = best_match(validator.iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or _missing_field(error)
        message = " ".join(error.message.split())
        if len(message) > 200:
            message = message[:197] + "..."
        raise BadInput(str(path), message, f"see {SCHEMA_NAME}", where or None)
    if data["id"] != path.stem:
        raise BadInput(
            str(path),
            f"id '{data['id']}' differs from the file name",
            f"rename the file to {data['id']}.json or set the id to {path.stem}",
            "id",
        )
    try:
        Draft202012Validator.check_schema(data["parameters"])
    except SchemaError as exc:
        raise BadInput(
            str(path), f"not a valid JSON Schema ({exc.message})", "fix the schema", "parameters"
        ) from None


def _build(path: Path, data: dict[str, Any]) -> Skill:
    skill = Skill(**data, path=path)
    skill.function = _import_handler(path, data["handler"])
    return skill


def _missing_field(error: Any) -> str:
    """For a 'required' error the field is in the message, not in the path."""
    match = re.match(r"'([^']+)' is a required property", error.message)
    return match.group(1) if match else ""


def _import_handler(path: Path, target: str) -> Callable[..., Any]:
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BadInput(
            str(path),
            f"cannot import {module_name} ({exc})",
            "name an importable module",
            "handler",
        ) from None
    handler = getattr(module, function, None)
    if not callable(handler):
        raise BadInput(
            str(path), f"{module_name} has no function {function}", "name a function", "handler"
        )
    return handler


def _check_references(skill: Skill, skills: dict[str, Skill]) -> None:
    for key in ("requires", "conflicts", "enhanced_by"):
        unknown = [i for i in getattr(skill, key) if i not in skills]
        if unknown:
            raise BadInput(
                str(skill.path),
                f"unknown skill {unknown[0]!r}",
                "name a skill of the catalog or drop it",
                key,
            )
        if skill.id in getattr(skill, key):
            raise BadInput(str(skill.path), "names the skill itself", "drop it", key)


def _check_closure(skill: Skill, registry: SkillRegistry) -> None:
    """A skill whose requirements conflict with each other could never be offered."""
    needed = registry.closure(skill.id)
    for one in needed:
        clash = registry.conflicts_of(one) & set(needed)
        if clash:
            raise BadInput(
                str(skill.path),
                f"requires {one} and {sorted(clash)[0]}, which conflict",
                "drop one of them from requires or conflicts",
                "requires",
            )
