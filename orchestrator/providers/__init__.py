"""Model providers, chosen by name from the mission or the CLI."""

from __future__ import annotations

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
    raise ProviderError(
        f"provider {name!r} is not available in this build yet (available: scripted)"
    )
