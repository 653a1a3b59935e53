"""OpenAI Chat Completions (and OpenAI-compatible servers) through the official SDK.

Calls stream (``stream=True`` with ``stream_options.include_usage``: usage arrives in
the last chunk), so long answers are no problem and text can be shown as it comes.

The conversation is kept in Anthropic-style blocks; this module converts at the edge:
assistant ``tool_use`` blocks become ``tool_calls``, user ``tool_result`` blocks become
``role: "tool"`` messages in the same order, and usage comes back normalised so that
``input_tokens`` excludes cached tokens, as it does for Anthropic.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from orchestrator.providers.base import ModelRequest, ModelResponse, ToolCall, Usage
from orchestrator.providers.errors import (
    FatalError,
    Malformed,
    RetryableError,
    Seen,
    call_sdk,
    limit_headers,
    malformed,
    one_line,
    says_spend_limit,
    show,
    status_error,
)
from orchestrator.providers.sdkgate import SendGate, warm_up

_STOP = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}


class OpenAIProvider:
    """``complete`` raises RetryableError or FatalError; the SDK's own retries are off.

    The official API gets ``max_completion_tokens`` (``max_tokens`` is deprecated there
    and refused by reasoning models); any other base URL gets ``max_tokens``, which
    Ollama, vLLM and llama.cpp's server read.

    No ``count_input_tokens``: Chat Completions has no token-counting endpoint (the
    Responses API's input-token count takes another input format, and compatible
    servers lack it), so the budget reserves for these calls from the size estimate.
    """

    name = "openai"

    def __init__(
        self, model: str, api_key: str, base_url: str | None = None, timeout: float = 600
    ) -> None:
        if not api_key:
            raise FatalError("openai: no API key (set OPENAI_API_KEY)")
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._secret = api_key
        self.gate = SendGate()
        self._client = openai.OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [self.gate]}),
        )
        self.official = is_official(self._client.base_url.host)

    def __repr__(self) -> str:
        return f"OpenAIProvider(model={self.model!r}, base_url={self.base_url!r})"

    def warm(self) -> None:
        """The SDK's first-use work, done ahead: its request path (stopped at the gate:
        nothing is sent) and its response models (built from a sample answer)."""
        warm_up(self.complete, self.model)
        # Best effort: a newer SDK whose models differ only misses the head start.
        with contextlib.suppress(Exception):
            chunks = Chunks()
            for sample in _samples(self.model):
                chunks.add(openai.types.chat.ChatCompletionChunk.construct(**sample))
            chunks.response({})

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.gate.send_by = request.send_by
        return call_sdk(
            "openai",
            lambda seen: self._stream(request, seen),
            openai.APIError,
            self._failure,
            self._secret,
        )

    def _stream(self, request: ModelRequest, seen: Seen) -> ModelResponse:
        chunks = Chunks(request.on_text)
        with self._client.chat.completions.create(**self.params(request)) as stream:
            seen.headers = limit_headers(stream.response.headers)
            for chunk in stream:
                chunks.add(chunk)
                seen.usage = chunks.usage or seen.usage
        return chunks.response(seen.headers)

    def params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.system, request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        params["max_completion_tokens" if self.official else "max_tokens"] = request.max_tokens
        if request.tools:
            params["tools"] = to_openai_tools(request.tools)
        return params

    def _failure(self, exc: openai.APIError) -> Exception:
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APITimeoutError):
            return RetryableError(f"openai: no answer within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return RetryableError(f"openai: connection failed: {self._line(exc)}")
        return malformed("openai", self._line(exc, 200), Seen())

    def _status_error(self, exc: openai.APIStatusError) -> Exception:
        error = exc.body if isinstance(exc.body, dict) else {}
        message = error.get("message") or exc.message
        code, kind = str(error.get("code") or ""), str(error.get("type") or "")
        spend = exc.status_code == 429 and (
            "insufficient_quota" in (code, kind) or says_spend_limit(message)
        )
        line = self._line(f"{code or kind}: {message}" if code or kind else message)
        return status_error(
            "openai", exc.status_code, line, limit_headers(exc.response.headers), spend_limit=spend
        )

    def _line(self, text: Any, limit: int = 500) -> str:
        return one_line(text, self._secret, limit)


def is_official(host: str) -> bool:
    """api.openai.com and its regional hosts (us.api.openai.com ...)."""
    return host == "api.openai.com" or host.endswith(".openai.com")


def to_openai_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t.get("description", ""),
                "parameters": t.get("input_schema", {"type": "object", "properties": {}}),
            },
        }
        for t in tools
    ]


def to_openai_messages(system: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic-style blocks to Chat Completions messages."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
        elif message.get("role") == "assistant":
            out.append(_assistant(content or []))
        else:
            out.extend(_user(content or []))
    return out


def _assistant(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    text = "\n".join(b["text"] for b in blocks if b.get("type") == "text" and b.get("text"))
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": json.dumps(b.get("input", {}))},
        }
        for b in blocks
        if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results first (they must follow the assistant's calls), then any text."""
    out: list[dict[str, Any]] = []
    for b in blocks:
        if b.get("type") == "tool_result":
            text = _text_of(b.get("content", ""))
            if b.get("is_error"):
                text = f"Error: {text}"
            out.append({"role": "tool", "tool_call_id": b["tool_use_id"], "content": text})
    text = "\n".join(b["text"] for b in blocks if b.get("type") == "text" and b.get("text"))
    if text:
        out.append({"role": "user", "content": text})
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.get("text", "") for b in content if isinstance(b, dict))


def _arguments(value: Any) -> dict[str, Any]:
    """Decoded tool arguments: a JSON string as the API sends them, or an object as some
    compatible servers do. Malformed ones reach the tool layer as ``{"_raw": text}``,
    which refuses them with a message the model can act on."""
    if isinstance(value, dict):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    text = value if isinstance(value, str) else json.dumps(value)
    try:
        decoded = json.loads(text)
    except ValueError:
        return {"_raw": text}
    return decoded if isinstance(decoded, dict) else {"_raw": text}


@dataclass
class _Call:
    """One tool call being put together from its deltas."""

    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    whole: Any = None  # arguments that came as one object, not as string pieces


class Chunks:
    """A streamed completion put together chunk by chunk: content, tool calls by index
    (their id and name first, then argument pieces), the finish reason and the usage of
    the last chunk. ``response`` refuses a stream that never finished."""

    def __init__(self, on_text: Callable[[str], None] | None = None) -> None:
        self.on_text = on_text
        self.id = self.model = ""
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.finish: str | None = None
        self.usage: Usage | None = None

    def add(self, chunk: Any) -> None:
        self.id = self.id or str(chunk.id or "")
        self.model = self.model or str(chunk.model or "")
        if getattr(chunk, "usage", None) is not None:
            self.usage = _usage(chunk.usage)
        for choice in chunk.choices or []:
            if choice.index:
                continue  # one answer was asked for; a server sending more has the first used
            delta = choice.delta
            if delta is not None and delta.content:
                self.text.append(delta.content)
                show(self.on_text, delta.content)
            for call in (delta.tool_calls if delta is not None else None) or []:
                self._call(call)
            if choice.finish_reason:
                self.finish = choice.finish_reason

    def _call(self, delta: Any) -> None:
        function = delta.function
        starts = bool(delta.id or (function is not None and function.name))
        index = delta.index if isinstance(delta.index, int) else None
        if index is None:  # a server that leaves the index out: a new call starts with its id
            index = len(self.calls) - (0 if starts or not self.calls else 1)
        call = self.calls.setdefault(index, _Call())
        call.id = call.id or str(delta.id or "")
        if function is None:
            return
        call.name = call.name or str(function.name or "")
        if isinstance(function.arguments, str):
            call.parts.append(function.arguments)
        elif function.arguments is not None:
            call.whole = function.arguments

    def response(self, headers: dict[str, str]) -> ModelResponse:
        if self.finish is None:
            raise Malformed("the stream ended before its last chunk (no finish_reason)")
        calls = []
        for i, call in sorted(self.calls.items()):
            if not call.name:
                raise Malformed(f"tool call {i} came without a function name")
            args = call.whole if call.whole is not None else "".join(call.parts)
            calls.append(ToolCall(call.id or f"call_{self.id}_{i}", call.name, _arguments(args)))
        return ModelResponse(
            text="".join(self.text),
            tool_calls=calls,
            stop_reason=_STOP.get(self.finish, self.finish)
            or ("tool_use" if calls else "end_turn"),
            usage=self.usage or Usage(),
            model=self.model,
            headers=headers,
        )


def _usage(u: Any) -> Usage:
    """``input_tokens`` without the cached ones, as Anthropic counts it."""
    details = u.prompt_tokens_details
    cached = int((details.cached_tokens if details else 0) or 0)
    return Usage(
        input_tokens=int(u.prompt_tokens or 0) - cached,
        output_tokens=int(u.completion_tokens or 0),
        cache_read_tokens=cached,
    )


def _samples(model: str) -> list[dict[str, Any]]:
    """A streamed answer as the API sends it, for ``warm``."""
    head = {"id": "chatcmpl-warm", "object": "chat.completion.chunk", "created": 0, "model": model}
    call = {"index": 0, "id": "call_warm", "type": "function"}
    call["function"] = {"name": "finish", "arguments": "{}"}
    delta = {"role": "assistant", "content": "-", "tool_calls": [call]}
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    usage["prompt_tokens_details"] = {"cached_tokens": 0}
    return [
        {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": usage},
    ]
