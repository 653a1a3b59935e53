"""The ``command`` provider: a whole coding-agent CLI (Claude Code, Codex, Aider, Gemini
CLI) run in the worktree as the agent. It edits files itself; pd commits and merges.

``run_command_agent`` runs one attempt; each adapter module says which CLI facts it
relies on and where they come from.
"""

from __future__ import annotations

from orchestrator.providers.command.aider import AiderAdapter
from orchestrator.providers.command.base import Adapter, CommandAgentResult
from orchestrator.providers.command.claude import ClaudeAdapter
from orchestrator.providers.command.codex import CodexAdapter
from orchestrator.providers.command.gemini import GeminiAdapter
from orchestrator.providers.command.registry import ADAPTERS, get_adapter
from orchestrator.providers.command.runner import run_command_agent

__all__ = [
    "ADAPTERS",
    "Adapter",
    "AiderAdapter",
    "ClaudeAdapter",
    "CodexAdapter",
    "CommandAgentResult",
    "GeminiAdapter",
    "get_adapter",
    "run_command_agent",
]
