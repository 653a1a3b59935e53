"""Skills: JSON manifests in ``skills/`` with Python handlers, offered to agents as tools.

- ``registry``: load and validate the catalog (shipped folder + the workspace's).
- ``selection``: pick 3-8 skills for a task; ``model_ranker`` for the ranking call.
- ``toolbox``: ``SkillToolbox`` offers the picked skills plus ``finish`` and
  ``discover_skills`` to the agent loop.
- ``handlers``: the functions the manifests name.
"""

from orchestrator.team.skills.registry import Skill, SkillRegistry, load_registry, skill_dirs
from orchestrator.team.skills.selection import (
    Selection,
    choose_skills,
    model_ranker,
    parse_ranking,
    select_skills,
)
from orchestrator.team.skills.toolbox import SkillToolbox

__all__ = [
    "Selection",
    "Skill",
    "SkillRegistry",
    "SkillToolbox",
    "choose_skills",
    "load_registry",
    "model_ranker",
    "parse_ranking",
    "select_skills",
    "skill_dirs",
]
