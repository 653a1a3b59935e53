"""The adapters pd knows, by the name a mission or role gives."""

from __future__ import annotations

from orchestrator.agent.external.aider import AiderAdapter
from orchestrator.agent.external.base import Adapter
from orchestrator.agent.external.claude import ClaudeAdapter
from orchestrator.agent.external.codex import CodexAdapter
from orchestrator.agent.external.gemini import GeminiAdapter
from orchestrator.errors import ProviderError

ADAPTERS: dict[str, Adapter] = {
    "claude": ClaudeAdapter(),
    "codex": CodexAdapter(),
    "aider": AiderAdapter(),
    "gemini": GeminiAdapter(),
}


def get_adapter(adapter_or_name: Adapter | str) -> Adapter:
    """An adapter object passes through; a name is looked up, and a typo says what exists."""
    if not isinstance(adapter_or_name, str):
        return adapter_or_name
    try:
        return ADAPTERS[adapter_or_name]
    except KeyError:
        names = ", ".join(sorted(ADAPTERS))
        raise ProviderError(f"unknown command agent {adapter_or_name!r} (known: {names})") from None


# The one secret each CLI needs; every other key stays out of the agent's environment.
DEFAULT_KEYS: dict[str, list[str]] = {
    "claude": ["ANTHROPIC_API_KEY"],
    "codex": ["OPENAI_API_KEY"],
    "aider": ["ANTHROPIC_API_KEY", "OPENAI_API_KEY"],
    "gemini": ["GEMINI_API_KEY"],
}
