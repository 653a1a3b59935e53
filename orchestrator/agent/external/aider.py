"""Aider run headless: ``aider --message PROMPT --yes-always --no-auto-commits``.

CLI facts relied on (checked 2026 against aider.chat/docs/scripting.html, the options
reference at aider.chat/docs/config/options.html, and Aider-AI/aider
``aider/coders/base_coder.py`` + ``aider/utils.py``):
- ``--message`` sends one message, applies the edits and exits; ``--yes-always`` answers
  every confirmation; ``--no-auto-commits`` leaves committing to pd; ``--no-pretty`` keeps
  the output plain; ``--no-gitignore`` stops aider adding ``.aider*`` to .gitignore (that
  edit would land in pd's commit); ``--model`` picks the model.
- Output is plain text. After each model call it prints
  ``Tokens: 2.4k sent, 1.5k cache write, 12k cache hit, 215 received. Cost: $0.0097
  message, $0.02 session.`` (cache parts only when non-zero; the Cost part only when the
  model has a price). Counts go through ``format_tokens``: raw below 1000, one decimal
  "k" below 10k, rounded "k" above, so they are approximate. Old releases printed
  ``1,234 sent`` and ``$x request``; both read here. "sent" includes cache writes (and,
  for providers that count them so, cache hits): input = sent - write - hit.
- No structured success/failure: exit code 0 is success; the reply text is the summary.
- Key: whichever the model needs (``ANTHROPIC_API_KEY``, ``OPENAI_API_KEY`` …).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.agent.external.base import CommandAgentResult, short, unparseable
from orchestrator.providers.base import Usage

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_TOKENS = re.compile(r"^Tokens:\s*(?P<body>.*?received)\.?(?:\s+Cost:\s*(?P<cost>.*))?$")
_COUNT = re.compile(r"(?P<n>[\d.,]+)(?P<k>k?)\s+(?P<what>sent|cache write|cache hit|received)")
_SESSION = re.compile(r"\$(?P<usd>[\d.,]+)\s+session")
_BANNER = re.compile(
    r"^(Aider v\d|Main model:|Weak model:|Editor model:|Models?:|Git repo:|Repo-map:)"
)
SUMMARY_LINES = 15


@dataclass
class AiderAdapter:
    name: str = "aider"

    def argv(self, prompt: str, model: str | None, extra: list[str]) -> list[str]:
        argv = ["aider", "--message", prompt, "--yes-always", "--no-auto-commits"]
        argv += ["--no-pretty", "--no-gitignore"]
        if model:
            argv += ["--model", model]
        return argv + list(extra)

    def parse(self, stdout: str) -> CommandAgentResult:
        usage, turns, cost, text = Usage(), 0, None, []
        for raw in stdout.splitlines():
            line = _ANSI.sub("", raw).strip()
            match = _TOKENS.match(line)
            if match is None:
                if line and not _BANNER.match(line):
                    text.append(line)
                continue
            turns += 1
            usage += _usage(match["body"])
            session = _SESSION.search(match["cost"] or "")
            if session is not None:
                cost = Decimal(session["usd"].replace(",", ""))
        if not turns:
            return unparseable(self.name, 'no "Tokens: … sent, … received." line')
        summary = "\n".join(text[-SUMMARY_LINES:])
        return CommandAgentResult(True, summary, usage, cost, turns=turns)

    def describe(self, line: str) -> str | None:
        return short(_ANSI.sub("", line)) or None


def _usage(body: str) -> Usage:
    counts = {m["what"]: _count(m["n"], m["k"]) for m in _COUNT.finditer(body)}
    write, hit = counts.get("cache write", 0), counts.get("cache hit", 0)
    return Usage(
        input_tokens=max(counts.get("sent", 0) - write - hit, 0),
        output_tokens=counts.get("received", 0),
        cache_write_tokens=write,
        cache_read_tokens=hit,
    )


def _count(number: str, kilo: str) -> int:
    value = Decimal(number.replace(",", ""))
    return int(value * 1000) if kilo else int(value)
