"""Claude Code run headless: ``claude -p PROMPT --output-format stream-json --verbose``.

CLI facts relied on (checked 2026 against code.claude.com docs, the Agent SDK reference
and anthropics/claude-code issues #3490, #9184):
- ``-p``/``--print`` runs one prompt non-interactively; ``--output-format stream-json``
  needs ``--verbose`` and prints one JSON object per line: ``system`` (init),
  ``assistant``/``user`` (each wraps an Anthropic Messages ``message`` with content
  blocks), and last a ``result`` event with ``subtype`` ("success", "error_max_turns",
  "error_during_execution"), ``is_error``, ``result`` (final text), ``num_turns``,
  ``total_cost_usd`` (older builds: ``cost_usd``) and ``usage`` {input_tokens,
  output_tokens, cache_creation_input_tokens, cache_read_input_tokens}. Newer builds add
  ``errors`` (a list of strings) on error subtypes.
- Without a permission mode, headless Claude is denied edits and shell commands.
  ``--permission-mode bypassPermissions`` (same as ``--dangerously-skip-permissions``)
  allows both; Claude Code refuses it when running as root unless the environment has
  ``IS_SANDBOX=1``, which the caller must put in ``env`` (we never add variables).
- Key: ``ANTHROPIC_API_KEY`` (the caller passes it; everything else secret is scrubbed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.agent.external.base import (
    CommandAgentResult,
    as_decimal,
    as_int,
    json_objects,
    short,
    unparseable,
)
from orchestrator.providers.base import Usage


@dataclass
class ClaudeAdapter:
    """``permission_mode`` is the trade-off above: the agent must edit and run tests."""

    name: str = "claude"
    permission_mode: str = "bypassPermissions"

    def argv(self, prompt: str, model: str | None, extra: list[str]) -> list[str]:
        argv = ["claude", "-p", prompt, "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", self.permission_mode]
        if model:
            argv += ["--model", model]
        return argv + list(extra)

    def parse(self, stdout: str) -> CommandAgentResult:
        result = next((e for e in reversed(list(json_objects(stdout))) if _is_result(e)), None)
        if result is None:
            return unparseable(self.name, 'no {"type": "result"} event in its stream-json')
        usage_data = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        usage = Usage(
            input_tokens=as_int(usage_data.get("input_tokens")),
            output_tokens=as_int(usage_data.get("output_tokens")),
            cache_write_tokens=as_int(usage_data.get("cache_creation_input_tokens")),
            cache_read_tokens=as_int(usage_data.get("cache_read_input_tokens")),
        )
        cost = as_decimal(result.get("total_cost_usd", result.get("cost_usd")))
        text = result.get("result") if isinstance(result.get("result"), str) else ""
        turns = as_int(result.get("num_turns"))
        subtype = str(result.get("subtype", ""))
        if result.get("is_error") or (subtype and subtype != "success"):
            errors = result.get("errors")
            detail = text or ("; ".join(map(str, errors)) if isinstance(errors, list) else "")
            reason = f"claude: {detail or subtype or 'error'}"
            return CommandAgentResult(False, "", usage, cost, reason=reason, turns=turns)
        return CommandAgentResult(True, text.strip(), usage, cost, turns=turns)

    def describe(self, line: str) -> str | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict) or event.get("type") != "assistant":
            return None
        message = event.get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        for block in reversed(blocks if isinstance(blocks, list) else []):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                return short(f"{block.get('name', 'tool')} {_tool_target(block.get('input'))}")
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                return short(str(block["text"]))
        return None


def _is_result(event: dict[str, Any]) -> bool:
    return event.get("type") == "result"


def _tool_target(data: Any) -> str:
    """The argument a reader wants to see: a path, a command or a pattern."""
    if not isinstance(data, dict):
        return ""
    for key in ("file_path", "command", "pattern", "path", "url"):
        if isinstance(data.get(key), str):
            return data[key]
    return ""
