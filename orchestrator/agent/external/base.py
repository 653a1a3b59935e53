"""What every command adapter shares: the result type, the Protocol, small parse helpers.

An adapter turns a prompt into the tool's argv and reads the tool's own output back; it
never touches processes (that is ``runner.py``), so each one can be read on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from orchestrator.providers.base import Usage

TAIL_LINES = 40
TAIL_LINE_CHARS = 500
UNREADABLE = "could not read its output"


@dataclass
class CommandAgentResult:
    """How one run of an external agent CLI ended.

    ``cost_usd`` is what the tool itself reported (None when it reports no cost); the
    ledger may price ``usage`` instead. ``output_tail`` is the end of what the tool
    printed, kept for the failure reason and for the next attempt's feedback.
    """

    finished: bool
    summary: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal | None = None
    reason: str = ""
    output_tail: str = ""
    turns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "summary": self.summary,
            "usage": self.usage.to_dict(),
            "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
            "reason": self.reason,
            "turns": self.turns,
        }


class Adapter(Protocol):
    """One coding-agent CLI. ``argv`` starts with the default binary name."""

    name: str

    def argv(self, prompt: str, model: str | None, extra: list[str]) -> list[str]: ...

    def parse(self, stdout: str) -> CommandAgentResult:
        """Read the whole stdout back; must not raise on garbage (say why instead)."""
        ...

    def describe(self, line: str) -> str | None:
        """A short progress line for one stdout line, or None when it says nothing new."""
        ...


def json_objects(stdout: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSON-lines stream; other lines (banners, warnings) skipped.

    Floats come back as Decimal, so a reported cost keeps the digits the tool printed.
    """
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line, parse_float=Decimal)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def as_int(value: Any) -> int:
    """A token count from JSON; anything odd counts as 0 rather than failing the attempt."""
    try:
        return max(int(value), 0)
    except (TypeError, ValueError, InvalidOperation):
        return 0


def as_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines, each cut short: one stream-json line can be megabytes."""
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(k if len(k) <= TAIL_LINE_CHARS else k[:TAIL_LINE_CHARS] + "…" for k in kept)


def unparseable(name: str, what: str) -> CommandAgentResult:
    """The tool ran but did not print what its adapter expects (wrong version, a crash)."""
    return CommandAgentResult(finished=False, summary="", reason=f"{name}: {UNREADABLE}: {what}")


def is_unreadable(result: CommandAgentResult) -> bool:
    """Whether ``result`` says the output was unreadable, as opposed to the tool's own error."""
    return f": {UNREADABLE}: " in result.reason


def short(text: str, limit: int = 120) -> str:
    """First line of ``text``, squeezed to ``limit`` characters for a progress line."""
    line = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
