"""What the local API server answers: scripted replies and injected faults."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput

FAULT_KINDS = ("429", "529", "500", "400", "slow", "malformed", "object_args", "spend_limit")


@dataclass
class Reply:
    """One model answer. ``tool_calls`` are ``(name, input)`` pairs; an input given as a
    string is sent verbatim as OpenAI ``arguments`` (to script malformed JSON).
    ``stop`` overrides the stop reason (either API's vocabulary). ``extra_input_tokens``
    are billed on top of the prompt's own count (a provider that bills more input than a
    client could estimate, or than a token count of the same prompt said)."""

    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)
    output_tokens: int | None = None
    stop: str | None = None
    extra_input_tokens: int = 0

    def content_json(self) -> str:
        """What the model "wrote", for the default output token count."""
        calls = [{"name": name, "input": args} for name, args in self.tool_calls]
        return json.dumps({"text": self.text, "tool_calls": calls})


@dataclass
class Fault:
    """An injected failure for one request: ``kind`` is one of FAULT_KINDS.

    ``429`` carries ``retry_after`` (default 1 s); ``529`` is Anthropic's overloaded
    error (a 503 on the OpenAI endpoint); ``slow`` answers normally after ``delay``
    seconds (default 5); ``malformed`` is a 200 with broken JSON (a stream cut off
    halfway) and leaves the reply for the next request; ``object_args`` sends OpenAI
    tool-call arguments as a JSON object, not a string (Anthropic's are objects anyway);
    ``spend_limit`` is a 429 that no retry can cure."""

    kind: str
    retry_after: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r} (known: {', '.join(FAULT_KINDS)})")


DEFAULT_REPLY = Reply(text="ok")
ReplySource = Sequence[Any] | Callable[[str, dict[str, Any]], Any] | None
FaultSource = Sequence[Any] | Callable[..., Any] | None  # (index, api, body); counts: (index, body)


def as_reply(value: Any) -> Reply:
    """Accept a Reply, a plain string, or a dict as written in a replies file."""
    if value is None:
        return DEFAULT_REPLY
    if isinstance(value, Reply):
        return value
    if isinstance(value, str):
        return Reply(text=value)
    if isinstance(value, dict):
        calls = [
            (c["name"], c.get("input", {})) if isinstance(c, dict) else (c[0], c[1])
            for c in value.get("tool_calls", [])
        ]
        return Reply(
            value.get("text", ""),
            calls,
            value.get("output_tokens"),
            value.get("stop"),
            value.get("extra_input_tokens", 0),
        )
    raise TypeError(f"a reply must be a Reply, str or dict, not {type(value).__name__}")


def as_fault(value: Any) -> Fault | None:
    if value is None or isinstance(value, Fault):
        return value
    if isinstance(value, str):
        return Fault(value)
    if isinstance(value, dict):
        return Fault(**value)
    raise TypeError(f"a fault must be a Fault, str or dict, not {type(value).__name__}")


def load_replies(path: str | Path) -> list[Reply]:
    """A JSON list of replies: ``{"text", "tool_calls": [{"name", "input"}], ...}``."""
    where, example = str(path), 'e.g. [{"text": "done"}]'
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInput(where, "the replies file does not exist", "check the path") from None
    except OSError as exc:
        raise BadInput(where, f"cannot read it ({exc.strerror})", "check the path") from None
    except ValueError as exc:
        raise BadInput(where, f"not JSON ({exc})", "fix the JSON") from None
    if not isinstance(data, list):
        raise BadInput(where, "replies must be a JSON list", f"write a list of replies, {example}")
    replies = []
    for i, item in enumerate(data, 1):
        try:
            replies.append(as_reply(item))
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            fix = 'give text and/or tool_calls [{"name", "input"}]'
            raise BadInput(where, f"reply {i} is not a reply ({exc!r})", fix) from None
    return replies
