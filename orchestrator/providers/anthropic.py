"""The Anthropic Messages API through the official SDK, streamed, with prompt caching.

The internal conversation already is Anthropic's format, so the request is the
conversation plus two cache breakpoints: the system prompt and the last tool definition,
which together form the prefix every turn of every task of a role repeats. Calls stream
(``messages.stream``): the SDK refuses long non-streaming calls (a large ``max_tokens``),
text can be shown as it comes, and usage is read from the events as they arrive.

``count_input_tokens`` asks the API's token-counting endpoint for the same prompt, so the
budget can reserve what the call will be billed rather than a guess from its size.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import anthropic

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

_EPHEMERAL = {"type": "ephemeral"}
# An error event in the middle of a stream comes with the stream's 200: its type says more.
_STREAM_ERRORS = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500}
# A token count waits this long at most: past it, the estimate serves (one round trip
# more per call is the price of counting; a slow one must not hold the call up for long).
COUNT_TIMEOUT = 10.0
NO_COUNTING = {404, 405, 501}  # counts answered so: the endpoint is not there, stop asking


class AnthropicProvider:
    """``complete`` raises RetryableError or FatalError; the SDK's own retries are off."""

    name = "anthropic"

    def __init__(
        self, model: str, api_key: str, base_url: str | None = None, timeout: float = 600
    ) -> None:
        if not api_key:
            raise FatalError("anthropic: no API key (set ANTHROPIC_API_KEY)")
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self._secret = api_key
        self.counts = True  # False once the API has shown it has no token counting
        self.gate = SendGate()
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [self.gate]}),
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(model={self.model!r}, base_url={self.base_url!r})"

    def warm(self) -> None:
        """The SDK's first-use work, done ahead: its request path (stopped at the gate:
        nothing is sent) and its response models (built from a sample answer)."""
        warm_up(self.complete, self.model)
        # Best effort: a newer SDK whose models differ only misses the head start.
        with contextlib.suppress(Exception):
            _response(anthropic.types.Message.construct(**_sample(self.model)), {})

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.gate.send_by = request.send_by
        return call_sdk(
            "anthropic",
            lambda seen: self._stream(request, seen),
            anthropic.APIError,
            self._failure,
            self._secret,
        )

    def count_input_tokens(self, request: ModelRequest) -> int | None:
        """The input tokens the API counts for ``request``: the very system, tools and
        messages ``complete`` sends, cache breakpoints included (cached or not, the whole
        prompt). Not a model call: no permit (the gate lets it by), one try, a short
        timeout. Raises RetryableError or FatalError when the count failed; once one
        failed with a status of ``NO_COUNTING`` (a proxy or gateway without the endpoint)
        returns None without asking again."""
        if not self.counts:
            return None
        params = self.params(request)
        del params["max_tokens"]
        timeout = min(self.timeout, COUNT_TIMEOUT)

        def count(seen: Seen) -> int:
            tokens = self._client.messages.count_tokens(**params, timeout=timeout).input_tokens
            if not isinstance(tokens, int) or tokens < 0:
                raise Malformed(f"count_tokens answered input_tokens={tokens!r}")
            return tokens

        with self.gate.not_a_call():
            try:
                return call_sdk("anthropic", count, anthropic.APIError, self._failure, self._secret)
            except (FatalError, RetryableError) as exc:
                self.counts = exc.status not in NO_COUNTING
                raise

    def _stream(self, request: ModelRequest, seen: Seen) -> ModelResponse:
        """Read the whole stream; usage from message_start, then from message_delta."""
        stopped = False
        with self._client.messages.stream(**self.params(request)) as stream:
            seen.headers = limit_headers(stream.response.headers)
            for event in stream:
                if event.type == "message_start":
                    seen.usage = _usage(event.message.usage)
                elif event.type == "message_delta":
                    seen.usage = _usage(stream.current_message_snapshot.usage)
                elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                    show(request.on_text, event.delta.text)
                elif event.type == "message_stop":
                    stopped = True
            if not stopped:
                raise Malformed("the stream ended before message_stop")
            message = stream.get_final_message()
        return _response(message, seen.headers)

    def params(self, request: ModelRequest) -> dict[str, Any]:
        """The Messages API arguments: system prompt and last tool marked for caching."""
        params: dict[str, Any] = {
            "model": request.model or self.model,
            "max_tokens": request.max_tokens,
            "messages": request.messages,
        }
        if request.system:
            params["system"] = [
                {"type": "text", "text": request.system, "cache_control": _EPHEMERAL}
            ]
        if request.tools:
            tools = [dict(t) for t in request.tools]
            tools[-1]["cache_control"] = _EPHEMERAL
            params["tools"] = tools
        return params

    def _failure(self, exc: anthropic.APIError) -> Exception:
        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, anthropic.APITimeoutError):
            return RetryableError(f"anthropic: no answer within {self.timeout:g}s")
        if isinstance(exc, anthropic.APIConnectionError):
            return RetryableError(f"anthropic: connection failed: {self._line(exc)}")
        return malformed("anthropic", self._line(exc, 200), Seen())

    def _status_error(self, exc: anthropic.APIStatusError) -> Exception:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        error = error if isinstance(error, dict) else {}
        message = error.get("message") or exc.message
        kind = error.get("type") or ""
        code = (error.get("details") or {}).get("error_code") or ""
        status = exc.status_code
        if status < 400:  # an error event in the middle of a stream
            status = _STREAM_ERRORS.get(kind, 500)
        spend = status == 402 or (
            status == 429
            and ("spend_limit" in code or kind == "billing_error" or says_spend_limit(message))
        )
        line = self._line(f"{kind}: {message}" if kind else message)
        return status_error(
            "anthropic",
            status,
            line,
            limit_headers(exc.response.headers),
            spend_limit=spend,
        )

    def _line(self, text: Any, limit: int = 500) -> str:
        return one_line(text, self._secret, limit)


def _usage(u: Any) -> Usage:
    return Usage(
        input_tokens=int(u.input_tokens or 0),
        output_tokens=int(u.output_tokens or 0),
        cache_write_tokens=int(u.cache_creation_input_tokens or 0),
        cache_read_tokens=int(u.cache_read_input_tokens or 0),
    )


def _response(message: Any, headers: dict[str, str]) -> ModelResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            args = (
                block.input if isinstance(block.input, dict) else {"_raw": json.dumps(block.input)}
            )
            calls.append(ToolCall(id=block.id, name=block.name, input=args))
    return ModelResponse(
        text="\n".join(t for t in texts if t),
        tool_calls=calls,
        stop_reason=message.stop_reason or ("tool_use" if calls else "end_turn"),
        usage=_usage(message.usage),
        model=str(message.model),
        headers=headers,
    )


def _sample(model: str) -> dict[str, Any]:
    """An answer as the API sends it, for ``warm``."""
    return {
        "id": "msg_warm",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [
            {"type": "text", "text": "-"},
            {"type": "tool_use", "id": "toolu_warm", "name": "finish", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
