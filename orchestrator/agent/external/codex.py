"""OpenAI Codex CLI run headless: ``codex exec --json ... -- PROMPT``.

CLI facts relied on (checked 2026 against developers.openai.com/codex/noninteractive,
openai/codex ``codex-rs/exec/src/exec_events.rs`` and PR #4583):
- ``codex exec`` runs one task and exits; ``--json`` prints JSON lines: ``thread.started``,
  ``turn.started``, ``item.started|updated|completed`` (``item.type`` is ``agent_message``
  with ``text``, ``command_execution`` with ``command``, ``file_change`` with
  ``changes[].path``, ``reasoning``, ``error`` …), ``turn.completed`` with ``usage``
  {input_tokens, cached_input_tokens, output_tokens}, ``turn.failed`` with
  ``error.message``, and a fatal top-level ``error`` with ``message``.
- OpenAI counts cached tokens inside ``input_tokens``; pd's Usage keeps them apart
  (Anthropic style), so input = input_tokens - cached_input_tokens. No cost is reported.
- ``exec`` is read-only by default; ``--sandbox workspace-write`` lets it edit the
  worktree (``--full-auto`` is the deprecated spelling). ``--skip-git-repo-check`` avoids
  a refusal outside a trusted repository. ``-m/--model`` picks the model. Codex reads
  stdin when it is not a TTY; the runner gives it /dev/null.
- Key: ``OPENAI_API_KEY`` (or ``CODEX_API_KEY``), passed by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.agent.external.base import (
    CommandAgentResult,
    as_int,
    json_objects,
    short,
    unparseable,
)
from orchestrator.providers.base import Usage


@dataclass
class CodexAdapter:
    name: str = "codex"
    sandbox: str = "workspace-write"

    def argv(self, prompt: str, model: str | None, extra: list[str]) -> list[str]:
        argv = ["codex", "exec", "--json", "--sandbox", self.sandbox, "--skip-git-repo-check"]
        if model:
            argv += ["--model", model]
        # "--" so a prompt that starts with "-" is never read as a flag.
        return [*argv, *extra, "--", prompt]

    def parse(self, stdout: str) -> CommandAgentResult:
        usage, turns, summary, errors, failed = Usage(), 0, "", [], ""
        for event in json_objects(stdout):
            kind = event.get("type")
            if kind == "turn.completed":
                usage += _usage(event.get("usage"))
                turns += 1
            elif kind == "turn.failed":
                failed = _message(event.get("error")) or "turn failed"
            elif kind == "error":
                errors.append(_message(event) or "error")
            elif kind == "item.completed":
                item = event.get("item")
                if isinstance(item, dict) and item.get("type") == "agent_message":
                    summary = str(item.get("text", "")) or summary
        if failed or (errors and not turns):
            reason = f"codex: {failed or errors[-1]}"
            return CommandAgentResult(False, "", usage, None, reason=reason, turns=turns)
        if not turns:
            return unparseable(self.name, "no turn.completed event in its --json output")
        return CommandAgentResult(True, summary.strip(), usage, None, turns=turns)

    def describe(self, line: str) -> str | None:
        try:
            event = json.loads(line)
        except ValueError:
            return None
        if not isinstance(event, dict) or event.get("type") != "item.completed":
            return None
        item = event.get("item")
        if not isinstance(item, dict):
            return None
        kind = item.get("type")
        if kind == "command_execution":
            return short(f"$ {item.get('command', '')}")
        if kind == "file_change":
            paths = [c.get("path", "") for c in item.get("changes", []) if isinstance(c, dict)]
            return short("edit " + ", ".join(paths))
        if kind == "agent_message":
            return short(str(item.get("text", ""))) or None
        return None


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    cached = as_int(data.get("cached_input_tokens"))
    return Usage(
        input_tokens=max(as_int(data.get("input_tokens")) - cached, 0),
        output_tokens=as_int(data.get("output_tokens")),
        cache_read_tokens=cached,
    )


def _message(data: Any) -> str:
    return str(data.get("message", "")) if isinstance(data, dict) else ""
