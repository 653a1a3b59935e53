"""What a mission's provider needs before any worker starts: keys, models, prices.

Everything here fails closed and early: a missing key, an unknown model (no price, so
spend could not be bounded), a missing cassette or agent CLI is one line and exit 2,
before a worktree or a process exists.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.composition import CHEAP_TIER, TOP_TIER
from orchestrator.errors import BadInput
from orchestrator.ledger import PriceTable
from orchestrator.mission import Mission
from orchestrator.models import resolve_model
from orchestrator.providers.command.registry import get_adapter
from orchestrator.roles import Role

KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
KEY_HELP = {
    "anthropic": "create one at console.anthropic.com",
    "openai": "create one at platform.openai.com",
}


@dataclass
class ProviderPlan:
    """The checked provider: its name, and per role the model that role's agents use."""

    name: str
    models: dict[str, str] = field(default_factory=dict)
    # The top tier's model: for critical tasks and repeated failures (see
    # ``composition.tier_for``); empty when the mission pins one model for everyone.
    escalation: str = ""
    cheap: str = ""  # the cheap tier's model: for small jobs such as ranking skills
    prices: PriceTable | None = None
    cassette: Path | None = None
    base_url: str | None = None

    def context_limit(self, model: str) -> int | None:
        if self.prices is None or model not in self.prices:
            return None
        return self.prices.price(model).max_input


def check_provider(
    mission: Mission, mission_path: Path, roles: dict[str, Role], base_url: str | None = None
) -> ProviderPlan:
    """Resolve and check the mission's provider for the roles in its team."""
    config = mission.provider
    where = str(mission_path)
    if config.name == "scripted":
        return ProviderPlan(
            "scripted", _models(mission, roles, None), cassette=_cassette(mission, mission_path)
        )
    if config.name == "command":
        _check_agent(mission, where)
        return ProviderPlan("command", _models(mission, roles, None))
    base = base_url or config.base_url
    key = KEY_ENV[config.name]
    if not os.environ.get(key) and not (config.name == "openai" and base):
        raise BadInput(
            "environment",
            f"{key} is not set, so the {config.name} provider cannot be used",
            f"export {key}=<your key> ({KEY_HELP[config.name]}), or run offline with "
            "--provider scripted",
            key,
        )
    prices = PriceTable.load(_relative(mission.prices, mission_path))
    tiers = _relative(mission.models, mission_path)
    models = _models(mission, roles, config.name, tiers)
    top = "" if config.model else resolve_model(config.name, TOP_TIER, tiers)
    cheap = config.model or resolve_model(config.name, CHEAP_TIER, tiers)
    for model in sorted({*models.values(), top, cheap} - {""}):
        prices.price(model)  # UnknownModel: exit 2, no call is ever made to it
    return ProviderPlan(config.name, models, top, cheap, prices, base_url=base)


def _models(
    mission: Mission, roles: dict[str, Role], provider: str | None, tiers: Path | None = None
) -> dict[str, str]:
    """Model per team role: the mission's model (or tier) for all, else the role's tier."""
    out = {}
    for member in mission.team:
        wanted = mission.provider.model or (roles[member.role].tier if provider else "")
        out[member.role] = resolve_model(provider, wanted, tiers) if provider else wanted
    return out


def _relative(value: str | None, mission_path: Path) -> Path | None:
    return None if value is None else (mission_path.parent / Path(value).expanduser())


def _cassette(mission: Mission, mission_path: Path) -> Path:
    where = str(mission_path)
    if not mission.provider.cassette:
        raise BadInput(
            where,
            "the scripted provider needs a cassette",
            "set provider.cassette to a cassette file",
            "provider.cassette",
        )
    cassette = (mission_path.parent / mission.provider.cassette).resolve()
    if not cassette.is_file():
        raise BadInput(
            where,
            f"cassette {cassette} not found",
            "fix the path (relative to the mission file)",
            "provider.cassette",
        )
    return cassette


def _check_agent(mission: Mission, where: str) -> None:
    config = mission.provider
    if config.agent is None:
        raise BadInput(
            where,
            "the command provider needs an agent",
            "set provider.agent to claude, codex, aider or gemini",
            "provider.agent",
        )
    if config.executable:
        first = config.executable if isinstance(config.executable, str) else config.executable[0]
        found = Path(first).exists() or shutil.which(first)
        field_name = "provider.executable"
    else:
        first = get_adapter(config.agent).argv("", None, [])[0]
        found = shutil.which(first)
        field_name = "provider.agent"
    if not found:
        raise BadInput(
            where,
            f"'{first}' not found",
            f"install the {config.agent} CLI or set provider.executable to its path",
            field_name,
        )
