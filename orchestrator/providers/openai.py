"""OpenAI Chat Completions (and OpenAI-compatible servers) through the official SDK.

The conversation is kept in Anthropic-style blocks; this module converts at the edge:
assistant ``tool_use`` blocks become ``tool_calls``, user ``tool_result`` blocks become
``role: "tool"`` messages in the same order, and usage comes back normalised so that
``input_tokens`` excludes cached tokens, as it does for Anthropic.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import openai

from orchestrator.providers.base import ModelRequest, ModelResponse, ToolCall, Usage
from orchestrator.providers.errors import (
    FatalError,
    RetryableError,
    call_sdk,
    limit_headers,
    one_line,
    says_spend_limit,
    status_error,
)
from orchestrator.providers.sdkgate import SendGate, warm_up

_STOP = {"tool_calls": "tool_use", "stop": "end_turn", "length": "max_tokens"}


class OpenAIProvider:
    """``complete`` raises RetryableError or FatalError; the SDK's own retries are off.

    The official API gets ``max_completion_tokens`` (``max_tokens`` is deprecated there
    and refused by reasoning models); any other base URL gets ``max_tokens``, which
    Ollama, vLLM and llama.cpp's server read.
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
            _response(openai.types.chat.ChatCompletion.construct(**_sample(self.model)), {})

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.gate.send_by = request.send_by
        return call_sdk(  # type: ignore[no-any-return]
            "openai",
            lambda: self._client.chat.completions.with_raw_response.create(**self.params(request)),
            openai.APIError,
            self._failure,
            _response,
            self._secret,
        )

    def params(self, request: ModelRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "messages": to_openai_messages(request.system, request.messages),
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
        return RetryableError(f"openai: malformed response ({self._line(exc, 200)})", 200)

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


def _arguments(text: str | None) -> dict[str, Any]:
    """Decoded tool arguments; malformed ones reach the tool layer as ``{"_raw": text}``,
    which refuses them with a message the model can act on."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def _response(completion: Any, headers: dict[str, str]) -> ModelResponse:
    choice = completion.choices[0]
    message = choice.message
    calls = [
        ToolCall(
            id=call.id or f"call_{completion.id}_{i}",
            name=call.function.name,
            input=_arguments(call.function.arguments),
        )
        for i, call in enumerate(message.tool_calls or [])
        if call.type == "function"
    ]
    usage = Usage()
    if completion.usage is not None:
        u = completion.usage
        details = u.prompt_tokens_details
        cached = int((details.cached_tokens if details else 0) or 0)
        usage = Usage(
            input_tokens=int(u.prompt_tokens) - cached,
            output_tokens=int(u.completion_tokens),
            cache_read_tokens=cached,
        )
    reason = choice.finish_reason or ""
    return ModelResponse(
        text=message.content or "",
        tool_calls=calls,
        stop_reason=_STOP.get(reason, reason) or ("tool_use" if calls else "end_turn"),
        usage=usage,
        model=str(completion.model),
        headers=headers,
    )


def _sample(model: str) -> dict[str, Any]:
    """An answer as the API sends it, for ``warm``."""
    return {
        "id": "chatcmpl-warm",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "-",
                    "tool_calls": [
                        {
                            "id": "call_warm",
                            "type": "function",
                            "function": {"name": "finish", "arguments": "{}"},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "total_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
