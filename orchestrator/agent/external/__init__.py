"""The ``command`` provider: a whole coding-agent CLI (Claude Code, Codex, Aider, Gemini
CLI) run in the worktree as the agent. It edits files itself; pd commits and merges.

``run_command_agent`` runs one attempt; each adapter module says which CLI facts it
relies on and where they come from.
"""

from __future__ import annotations

from orchestrator.agent.external.aider import AiderAdapter
from orchestrator.agent.external.base import Adapter, CommandAgentResult
from orchestrator.agent.external.claude import ClaudeAdapter
from orchestrator.agent.external.codex import CodexAdapter
from orchestrator.agent.external.gemini import GeminiAdapter
from orchestrator.agent.external.registry import ADAPTERS, get_adapter
from orchestrator.agent.external.runner import run_command_agent

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
