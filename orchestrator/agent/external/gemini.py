"""Gemini CLI run headless: ``gemini -p PROMPT --output-format json``.

CLI facts relied on (checked 2026 against geminicli.com/docs/cli/headless and
google-gemini/gemini-cli ``packages/core/src/output/{json-formatter,types}.ts`` and
``packages/core/src/telemetry/uiTelemetry.ts``):
- ``-p/--prompt`` runs one prompt headless; ``--output-format json`` prints ONE
  pretty-printed JSON object when done: {session_id?, response, stats, error?}.
  ``stats.models[<model>]`` holds ``api.totalRequests`` and ``tokens`` {input, prompt,
  candidates, total, cached, thoughts, tool}; ``prompt`` includes ``cached`` and
  ``input`` = prompt - cached. Thoughts are billed as output, so output = candidates +
  thoughts. No cost is reported.
- A failure is {"error": {type, message, code?}}, written to stderr by current releases
  (the runner reads it from there) and to stdout by some; exit codes 1 (API), 42 (input),
  53 (turn limit).
- Headless mode refuses tools that need approval; ``--approval-mode yolo`` allows edits
  and shell commands (``--yolo`` is the deprecated spelling; giving both is an error).
  In an untrusted folder the CLI falls back to the default mode.
- Key: ``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``), passed by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orchestrator.agent.external.base import (
    CommandAgentResult,
    as_int,
    unparseable,
)
from orchestrator.providers.base import Usage


@dataclass
class GeminiAdapter:
    name: str = "gemini"
    approval_mode: str = "yolo"

    def argv(self, prompt: str, model: str | None, extra: list[str]) -> list[str]:
        argv = ["gemini", "-p", prompt, "--output-format", "json"]
        argv += ["--approval-mode", self.approval_mode]
        if model:
            argv += ["--model", model]
        return argv + list(extra)

    def parse(self, stdout: str) -> CommandAgentResult:
        data = last_json_object(stdout)
        if data is None:
            return unparseable(self.name, "no JSON object in its --output-format json output")
        error = data.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            return CommandAgentResult(False, "", reason=f"gemini: {message or 'error'}")
        if "response" not in data:
            return unparseable(self.name, 'its JSON has no "response"')
        usage, turns = _stats(data.get("stats"))
        summary = str(data.get("response") or "").strip()
        return CommandAgentResult(True, summary, usage, None, turns=turns)

    def describe(self, line: str) -> str | None:
        return None  # one JSON object at the very end: nothing to show while it works


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last top-level JSON object in ``text``, skipping any lines printed before it."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("{")]
    for start in reversed(starts):
        chunk = "".join(lines[start:])
        try:
            value, _ = json.JSONDecoder(parse_float=Decimal).raw_decode(chunk)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _stats(stats: Any) -> tuple[Usage, int]:
    """Sum every model's tokens: the CLI may route some calls to a smaller model."""
    usage, requests = Usage(), 0
    models = stats.get("models") if isinstance(stats, dict) else None
    for metrics in (models if isinstance(models, dict) else {}).values():
        if not isinstance(metrics, dict):
            continue
        tokens = metrics.get("tokens") if isinstance(metrics.get("tokens"), dict) else {}
        cached = as_int(tokens.get("cached"))
        usage += Usage(
            input_tokens=max(as_int(tokens.get("prompt")) - cached, 0),
            output_tokens=as_int(tokens.get("candidates")) + as_int(tokens.get("thoughts")),
            cache_read_tokens=cached,
        )
        api = metrics.get("api") if isinstance(metrics.get("api"), dict) else {}
        requests += as_int(api.get("totalRequests"))
    return usage, requests
