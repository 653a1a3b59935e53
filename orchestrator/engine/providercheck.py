"""What a mission's provider needs before any worker starts: keys, models, prices.

Everything here fails closed and early: a missing key, an unknown model (no price, so
spend could not be bounded), a missing cassette or agent CLI is one line and exit 2,
before a worktree or a process exists.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.agent.external.registry import get_adapter
from orchestrator.errors import BadInput
from orchestrator.limits.ledger import PriceTable
from orchestrator.planning.taskplan import PLAN_ID
from orchestrator.spec.mission import Mission
from orchestrator.team.roles import CHEAP_TIER, TOP_TIER, Role
from orchestrator.team.tiers import resolve_model

KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
CONNECT_TIMEOUT = 3.0  # seconds for the TCP connect that tells a server is there
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
        cassette = _cassette(mission, mission_path)
        _check_cassette(mission, cassette, where)
        return ProviderPlan("scripted", _models(mission, roles, None), cassette=cassette)
    if config.name == "command":
        _check_agent(mission, where)
        return ProviderPlan("command", _models(mission, roles, None))
    base = base_url or config.base_url
    if base:
        check_server(base, *(("--base-url", None) if base_url else (where, "provider.base_url")))
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


def check_server(url: str, where: str, field_name: str | None) -> None:
    """A base URL must be an http(s) URL with something listening: otherwise every model
    call would retry for minutes before the run gives up."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadInput(where, f"'{url}' is not a URL ({exc})", _URL_FIX, field_name) from None
    if parts.scheme not in ("http", "https"):
        raise BadInput(where, f"'{url}' is not an http(s) URL", _URL_FIX, field_name)
    if not parts.hostname:
        raise BadInput(where, f"'{url}' names no host", _URL_FIX, field_name)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        raise BadInput(
            where,
            f"nothing answers at {parts.hostname}:{port} ({exc.strerror or exc})",
            "start the server, or correct the URL",
            field_name,
        ) from None


_URL_FIX = "give the server's URL, e.g. http://localhost:11434/v1"


def _check_cassette(mission: Mission, cassette: Path, where: str) -> None:
    """The whole cassette parses, and every job the run will ask it about has an entry
    (or the ``*`` fallback), so a replay never stalls on a missing answer."""
    from orchestrator.errors import ProviderError
    from orchestrator.providers.scripted import ScriptedProvider

    try:
        entries = ScriptedProvider(cassette).tasks
    except ProviderError as exc:
        raise BadInput(where, str(exc), "fix the cassette file", "provider.cassette") from None
    if "*" in entries:
        return
    for key, field_name in _cassette_keys(mission):
        if key not in entries:
            raise BadInput(
                where,
                f"cassette {cassette} has no entry for '{key}' ({field_name}) and no '*'",
                f'add "{key}" (or "*") under "tasks" in the cassette',
                "provider.cassette",
            )


def _cassette_keys(mission: Mission) -> list[tuple[str, str]]:
    """The cassette entries a run asks for: each task, each reviewed task's review, or
    the planning step of a planned mission (whose tasks are not known yet)."""
    if mission.planned:
        return [(PLAN_ID, "goal")]
    keys = [(t.id, f"tasks[{i}]") for i, t in enumerate(mission.tasks)]
    return keys + [
        (f"{t.id}:review", f"tasks[{i}].review")
        for i, t in enumerate(mission.tasks)
        if (mission.review if t.review is None else t.review)
    ]


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
