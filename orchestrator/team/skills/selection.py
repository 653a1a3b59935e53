"""Which skills a task gets: 3 to 8, the role's core skills always among them.

First a filter: a skill is a candidate when its tags meet the role's capabilities or
its keywords meet the task's text (title, description, files). When more than
``SHORTLIST`` candidates remain, a ranking callable (usually the cheap model, see
``model_ranker``) orders them; without one, or when its answer is unusable, the filter's
order stands. Then skills are taken in order, each with what it ``requires``; one that
``conflicts`` with a skill already taken is skipped, so the earlier one wins: core
skills beat candidates, and a better-ranked candidate beats a worse one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import BadInput
from orchestrator.providers.base import ModelRequest, Provider
from orchestrator.team.skills.registry import Skill, SkillRegistry, words

MIN_SKILLS, MAX_SKILLS, SHORTLIST = 3, 8, 10
# Read-only and broadly useful: what fills a selection the filter left short.
FILL_ORDER = (
    "read_file",
    "list_files",
    "search_code",
    "find_files",
    "file_outline",
    "git_status",
    "git_diff",
    "edit_file",
    "write_file",
    "run_command",
)

Ranker = Callable[[str, list[Skill]], list[str]]


@dataclass
class Selection:
    """The chosen skills, and why some were left out (for the transcript)."""

    skills: list[Skill]
    candidates: list[str] = field(default_factory=list)
    ranked: bool = False
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.skills]

    def to_dict(self) -> dict[str, Any]:
        return {
            "skills": self.ids,
            "candidates": self.candidates,
            "ranked": self.ranked,
            "skipped": self.skipped,
        }


def select_skills(
    registry: SkillRegistry,
    role_skills: Sequence[str],
    role_capabilities: Sequence[str],
    task_text: str,
    rank: Ranker | None = None,
) -> list[Skill]:
    """The skills to offer for one task (see ``choose_skills`` for the details)."""
    return choose_skills(registry, role_skills, role_capabilities, task_text, rank).skills


def choose_skills(
    registry: SkillRegistry,
    role_skills: Sequence[str],
    role_capabilities: Sequence[str],
    task_text: str,
    rank: Ranker | None = None,
) -> Selection:
    """Filter, rank when more than ``SHORTLIST`` remain, then take in order.

    Raises BadInput when the role's own core skills cannot all be offered (unknown,
    conflicting, or more than ``MAX_SKILLS`` with their requirements).
    """
    core = [registry.get(i).id for i in dict.fromkeys(role_skills)]
    chosen: dict[str, Skill] = {}
    for skill_id in core:
        if not _take(registry, skill_id, chosen, MAX_SKILLS):
            raise BadInput(
                "role skills",
                f"core skill {skill_id} conflicts with another or exceeds {MAX_SKILLS} skills",
                f"list at most {MAX_SKILLS} compatible core skills in the role",
            )
    candidates = _filter(registry, role_capabilities, task_text, core)
    selection = Selection([], candidates=candidates)
    if len(candidates) > SHORTLIST and rank is not None:
        candidates = _ranked(rank(task_text, [registry.skills[i] for i in candidates]), candidates)
        selection.ranked = True
    for skill_id in candidates:
        if len(chosen) >= MAX_SKILLS:
            break
        if skill_id not in chosen and not _take(registry, skill_id, chosen, MAX_SKILLS):
            selection.skipped[skill_id] = _why(registry, skill_id, chosen)
    for skill_id in [*FILL_ORDER, *sorted(registry.skills)]:  # too few: safe defaults
        if len(chosen) >= MIN_SKILLS:
            break
        if skill_id in registry.skills and skill_id not in chosen:
            _take(registry, skill_id, chosen, MAX_SKILLS)
    selection.skills = list(chosen.values())
    return selection


def _filter(
    registry: SkillRegistry, capabilities: Sequence[str], task_text: str, core: list[str]
) -> list[str]:
    """Candidates best first: a keyword shared with the task counts 2, a tag that is one
    of the role's capabilities 1, and being in a core skill's ``enhanced_by`` 1."""
    asked = words(task_text)
    caps = set(capabilities)
    enhancers = {e for i in core for e in registry.skills[i].enhanced_by}
    scores = {}
    for skill in registry.skills.values():
        if skill.id in core:
            continue
        score = len(caps & set(skill.tags)) + 2 * registry.score(skill.id, asked)
        if score:
            scores[skill.id] = score + (skill.id in enhancers)
    return sorted(scores, key=lambda i: (-scores[i], i))


def _ranked(answer: Iterable[str], candidates: list[str]) -> list[str]:
    """The ranker's order for the ids it named, then the rest in the filter's order."""
    named = [i for i in dict.fromkeys(answer) if i in candidates]
    return [*named, *(i for i in candidates if i not in named)]


def _take(registry: SkillRegistry, skill_id: str, chosen: dict[str, Skill], cap: int) -> bool:
    """Add the skill and its requirements unless one conflicts or they do not fit."""
    bring = [i for i in registry.closure(skill_id) if i not in chosen]
    taken = set(chosen) | set(bring)
    if any(registry.conflicts_of(i) & taken for i in bring) or len(taken) > cap:
        return False
    for i in bring:
        chosen[i] = registry.skills[i]
    return True


def _why(registry: SkillRegistry, skill_id: str, chosen: dict[str, Skill]) -> str:
    for i in registry.closure(skill_id):
        clash = registry.conflicts_of(i) & set(chosen)
        if clash:
            return f"conflicts with {sorted(clash)[0]}, chosen first"
    return f"no room: {MAX_SKILLS} skills at most"


# ---- ranking by a model ----------------------------------------------------------------

RANK_SYSTEM = (
    "You choose the tools a coding agent gets for one task. Reply with only a JSON array "
    "of tool ids, most useful first, at most {n}, using only ids from the list."
)


def model_ranker(
    provider: Provider,
    model: str,
    *,
    task_id: str = "skills",
    attempt: int = 1,
    max_tokens: int = 200,
    record: Callable[[dict[str, Any]], None] = lambda e: None,
) -> Ranker:
    """A ``Ranker`` that asks ``provider`` (the cheap tier) for a JSON list of ids.

    A reply without a usable list ranks nothing, so the filter's order stands. A
    ProviderError propagates: the caller's attempt handling decides (budget halts too).
    """

    def rank(task_text: str, candidates: list[Skill]) -> list[str]:
        listing = "\n".join(f"- {s.id}: {s.short_description}" for s in candidates)
        prompt = f"Task:\n{task_text.strip()}\n\nTools:\n{listing}"
        request = ModelRequest(
            RANK_SYSTEM.format(n=MAX_SKILLS),
            [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
            [],
            max_tokens,
            model,
            task_id,
            attempt,
        )
        response = provider.complete(request)
        ids = parse_ranking(response.text, [s.id for s in candidates])
        record(
            {
                "kind": "skill_ranking",
                "reply": response.text,
                "ranked": ids,
                "usage": response.usage.to_dict(),
            }
        )
        return ids

    return rank


def parse_ranking(text: str, known: Sequence[str]) -> list[str]:
    """The known ids of the first JSON array of strings in ``text``; [] if none."""
    for match in re.finditer(r"\[[^\[\]]*\]", text or ""):
        try:
            items = json.loads(match.group(0))
        except ValueError:
            continue
        ids = [i for i in items if isinstance(i, str) and i in known]
        if ids:
            return list(dict.fromkeys(ids))
    return []
