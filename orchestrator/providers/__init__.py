"""Model providers, chosen by name from the mission or the CLI."""

from __future__ import annotations

import os
from typing import Any

from orchestrator.errors import ProviderError
from orchestrator.providers.base import (
    ModelRequest,
    ModelResponse,
    Provider,
    ToolCall,
    Usage,
)
from orchestrator.providers.scripted import ScriptedProvider

__all__ = [
    "ModelRequest",
    "ModelResponse",
    "Provider",
    "ProviderError",
    "ScriptedProvider",
    "ToolCall",
    "Usage",
    "make_provider",
    "preload_modules",
]


def make_provider(name: str, **options: Any) -> Provider:
    """Build the provider ``name`` from its options; unknown names say what exists."""
    if name == "scripted":
        cassette = options.pop("cassette", None)
        if not cassette:
            raise ProviderError("the scripted provider needs a cassette: pass cassette=PATH")
        if options:
            raise ProviderError(f"scripted provider: unknown options {sorted(options)}")
        return ScriptedProvider(cassette)
    if name in _KEY_VARIABLES:
        return _make_api_provider(name, options)
    raise ProviderError(f"unknown provider {name!r} (available: scripted, anthropic, openai)")


_KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


def preload_modules(name: str) -> list[str]:
    """For provider ``name``: its SDK, then the module that warms it (``prewarm``), for the
    workers' forkserver to import once for all of them; nothing for the others."""
    return [name, "orchestrator.providers.prewarm"] if name in _KEY_VARIABLES else []


_API_OPTIONS = {"model", "api_key", "base_url", "timeout"}


def _make_api_provider(name: str, options: dict[str, Any]) -> Provider:
    """A real API provider; the key comes from ``api_key`` or the environment, so it need
    never sit in a mission, a config message or a log. Options set to None are dropped."""
    options = {k: v for k, v in options.items() if v is not None}
    if unknown := set(options) - _API_OPTIONS:
        raise ProviderError(
            f"{name} provider: unknown options {sorted(unknown)} (known: {sorted(_API_OPTIONS)})"
        )
    if not options.get("model"):
        raise ProviderError(f"{name} provider: no model given (set the mission's provider.model)")
    variable = _KEY_VARIABLES[name]
    options.setdefault("api_key", os.environ.get(variable, ""))
    if not options["api_key"] and name == "openai" and options.get("base_url"):
        options["api_key"] = "unused"  # local OpenAI-compatible servers ignore the key
    if not options["api_key"]:
        raise ProviderError(
            f"{name} provider: no API key (set the {variable} environment variable)"
        )
    if name == "anthropic":
        from orchestrator.providers.anthropic import AnthropicProvider

        return AnthropicProvider(**options)
    from orchestrator.providers.openai import OpenAIProvider

    return OpenAIProvider(**options)
