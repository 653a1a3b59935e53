"""The provider seam: one request type, one response type, one Protocol.

The conversation is kept in Anthropic-style content blocks (text, tool_use, tool_result);
a provider for another API converts at its edge, so the agent loop and the transcripts
never depend on which API answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol


@dataclass
class ToolCall:
    """One tool invocation the model asked for."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass
class Usage:
    """Token counts of one call (or a sum of calls), as the cost ledger prices them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """Build from a dict; unknown keys are dropped so newer records still load."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})


@dataclass
class ModelRequest:
    """Everything a provider needs for one call; ``task_id``/``attempt`` let replays pick."""

    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int
    model: str
    task_id: str
    attempt: int
    send_by: float = 0.0  # time.monotonic() after which the request must not go out (0: any)
    # Called with each piece of the reply's text as it streams in, to show it live.
    on_text: Callable[[str], None] | None = field(default=None, compare=False, repr=False)


@dataclass
class ModelResponse:
    """One model answer: its text, the tools it wants run, and what it cost."""

    text: str
    tool_calls: list[ToolCall]
    stop_reason: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    # The response's rate-limit and retry headers (lower-cased names), for the limiter.
    headers: dict[str, str] = field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        blocks: list[dict[str, Any]] = []
        if self.text:
            blocks.append({"type": "text", "text": self.text})
        for call in self.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            )
        if not blocks:
            # APIs reject an empty assistant turn; keep the conversation valid.
            blocks.append({"type": "text", "text": "(no reply)"})
        return {"role": "assistant", "content": blocks}

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "stop_reason": self.stop_reason,
            "usage": self.usage.to_dict(),
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            text=data.get("text", ""),
            tool_calls=[ToolCall(**c) for c in data.get("tool_calls", [])],
            stop_reason=data.get("stop_reason", ""),
            usage=Usage.from_dict(data.get("usage", {})),
            model=data.get("model", ""),
        )


class Provider(Protocol):
    """Where model answers come from. ``complete`` raises ProviderError when it cannot."""

    name: str

    def complete(self, request: ModelRequest) -> ModelResponse: ...
