"""The two wire formats the local server speaks: Anthropic Messages and OpenAI Chat.

Each dialect knows its auth header, its request checks, how its prompt is counted and
cached, and the exact shapes of its answers, errors and rate-limit headers, so the real
SDKs parse everything into their own typed objects and exception classes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.testing.apiserver.limits import go_duration
from orchestrator.testing.apiserver.script import Reply

_dumps = json.dumps


def tokens(chars: int, chars_per_token: float = 4.0) -> int:
    return math.ceil(chars / chars_per_token)


@dataclass
class Prompt:
    """A request's prompt as the server bills it: total tokens and cacheable prefixes
    (``(key, tokens)``, shortest first)."""

    total: int
    prefixes: list[tuple[str, int]]


class Dialect:
    api = ""
    path = ""
    explicit_cache = False  # Anthropic writes caches at marked breakpoints; OpenAI is automatic

    def key_ok(self, headers: Any, api_key: str) -> bool:
        raise NotImplementedError

    def validate(self, body: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        raise NotImplementedError

    def prompt(self, body: dict[str, Any], chars_per_token: float = 4.0) -> Prompt:
        """The prompt's tokens: its JSON's characters over ``chars_per_token``."""
        raise NotImplementedError

    def answer(self, index: int, body: dict[str, Any], reply: Reply, usage: dict) -> dict:
        raise NotImplementedError

    def stream(self, answer: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        """The answer as the server-sent events the API streams, one frame each."""
        raise NotImplementedError

    def usage(self, prompt: Prompt, read: int, write: int, output: int) -> dict[str, Any]:
        raise NotImplementedError

    def error(self, kind: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def limit_headers(self, state: dict[str, tuple[int, int, float]]) -> dict[str, str]:
        raise NotImplementedError

    def request_id_header(self, index: int) -> dict[str, str]:
        raise NotImplementedError

    def unknown_model(self, model: str) -> str:
        """The 404 message for a model the server does not serve."""
        raise NotImplementedError

    def model_list(self, models: list[str]) -> dict[str, Any]:
        """``GET /v1/models`` in this API's shape."""
        raise NotImplementedError


def _hash(seed: str) -> Any:
    return hashlib.sha1(seed.encode(), usedforsecurity=False)


def _rfc3339(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Anthropic(Dialect):
    api = "anthropic"
    path = "/v1/messages"
    explicit_cache = True
    _names = {"requests": "requests", "input_tokens": "input-tokens"}
    _names["output_tokens"] = "output-tokens"
    _errors = {
        "invalid_request": (400, "invalid_request_error"),
        "authentication": (401, "authentication_error"),
        "not_found": (404, "not_found_error"),
        "model_not_found": (404, "not_found_error"),
        "rate_limit": (429, "rate_limit_error"),
        "spend_limit": (429, "rate_limit_error"),
        "api_error": (500, "api_error"),
        "overloaded": (529, "overloaded_error"),
    }

    def key_ok(self, headers: Any, api_key: str) -> bool:
        # Older SDKs send x-api-key; anthropic 2.x sends the key as a Bearer token.
        given = headers.get("x-api-key")
        if given is None:
            given = (headers.get("authorization") or "").removeprefix("Bearer ")
        return given == api_key

    def validate(self, body: dict[str, Any]) -> str | None:
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if not isinstance(body.get(name), kind):
                return f"{name}: Field required"
        if not body["messages"]:
            return "messages: at least one message is required"
        previous: set[str] = set()
        for i, message in enumerate(body["messages"]):
            content = message.get("content")
            content = content if isinstance(content, list) else []
            blocks = [b for b in content if isinstance(b, dict)]
            results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if stray := results - previous:
                return (
                    f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{', '.join(sorted(map(str, stray)))}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            if missing := previous - results:
                return (
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
            uses = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
            previous = uses if message.get("role") == "assistant" else set()
        if previous:
            return "messages: the final assistant message has `tool_use` blocks without results"
        return None

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return body.get("max_tokens")

    def prompt(self, body: dict[str, Any], chars_per_token: float = 4.0) -> Prompt:
        system, tools = body.get("system"), body.get("tools") or []
        everything = {"system": system, "messages": body["messages"], "tools": tools}
        total = tokens(len(_dumps(everything)), chars_per_token)
        segments: list[Any] = list(tools)
        segments += system if isinstance(system, list) else [system] if system else []
        for message in body["messages"]:
            content = message.get("content")
            segments += content if isinstance(content, list) else [content]
        digest, chars, prefixes = _hash(str(body.get("model"))), 0, []
        for segment in segments:
            text = _dumps(segment)
            digest.update(text.encode())
            chars += len(text)
            if isinstance(segment, dict) and segment.get("cache_control"):
                prefixes.append((digest.hexdigest(), min(total, tokens(chars, chars_per_token))))
        return Prompt(total, prefixes)

    def usage(self, prompt: Prompt, read: int, write: int, output: int) -> dict[str, Any]:
        return {
            "input_tokens": prompt.total - read - write,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "output_tokens": output,
            "service_tier": "standard",
        }

    def answer(self, index: int, body: dict[str, Any], reply: Reply, usage: dict) -> dict:
        content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
        for i, (name, args) in enumerate(reply.tool_calls):
            content.append(
                {"type": "tool_use", "id": f"toolu_{index:08d}{i:04d}", "name": name, "input": args}
            )
        stop = _STOP_TO_ANTHROPIC.get(reply.stop or "", reply.stop)
        return {
            "id": f"msg_{index:012d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", ""),
            "content": content,
            "stop_reason": stop or ("tool_use" if reply.tool_calls else "end_turn"),
            "stop_sequence": None,
            "usage": usage,
        }

    def stream(self, answer: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        """message_start (input usage, output 1), ping, per block content_block_start,
        text_delta or input_json_delta pieces, content_block_stop; then message_delta with
        the stop reason and the final usage, and message_stop."""
        usage = answer["usage"]
        start = {
            **answer,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": start},
            {"type": "ping"},
        ]
        for i, block in enumerate(answer["content"]):
            if block["type"] == "text":
                opened = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": t} for t in pieces(block["text"])]
            else:
                opened = {**block, "input": {}}
                text = block["input"] if isinstance(block["input"], str) else _dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": t} for t in pieces(text)]
            events.append({"type": "content_block_start", "index": i, "content_block": opened})
            events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
            events.append({"type": "content_block_stop", "index": i})
        stop = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
        events.append({"type": "message_delta", "delta": stop, "usage": usage})
        events.append({"type": "message_stop"})
        return [f"event: {e['type']}\ndata: {_dumps(e)}\n\n".encode() for e in events]

    def error(self, kind: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        status, type_ = self._errors[kind]
        error: dict[str, Any] = {"type": type_, "message": message}
        if kind == "spend_limit":
            error["details"] = {"error_code": "enforced_spend_limit_reached"}
        return status, {"type": "error", "error": error, "request_id": extra.get("request_id")}

    def limit_headers(self, state: dict[str, tuple[int, int, float]]) -> dict[str, str]:
        """Each bucket's, and ``tokens-*``: the most restrictive token bucket, as the API
        reports it."""
        token_buckets = [state[k] for k in ("input_tokens", "output_tokens") if k in state]
        named = [(self._names[k], v) for k, v in state.items()]
        if token_buckets:
            named.append(("tokens", min(token_buckets, key=lambda b: b[1])))
        headers = {}
        for name, (limit, remaining, reset) in named:
            prefix = f"anthropic-ratelimit-{name}"
            headers[f"{prefix}-limit"] = str(limit)
            headers[f"{prefix}-remaining"] = str(remaining)
            headers[f"{prefix}-reset"] = _rfc3339(reset)
        return headers

    def request_id_header(self, index: int) -> dict[str, str]:
        return {"request-id": f"req_{index:012d}"}

    def unknown_model(self, model: str) -> str:
        return f"model: {model}"

    def model_list(self, models: list[str]) -> dict[str, Any]:
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for m in models
        ]
        first, last = (models[0], models[-1]) if models else (None, None)
        return {"data": data, "has_more": False, "first_id": first, "last_id": last}


_STOP_TO_ANTHROPIC = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
_STOP_TO_OPENAI = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


class OpenAI(Dialect):
    api = "openai"
    path = "/v1/chat/completions"
    _errors = {
        "invalid_request": (400, "invalid_request_error", None),
        "authentication": (401, "invalid_request_error", "invalid_api_key"),
        "not_found": (404, "invalid_request_error", "unknown_url"),
        "model_not_found": (404, "invalid_request_error", "model_not_found"),
        "rate_limit": (429, "tokens", "rate_limit_exceeded"),
        "spend_limit": (429, "insufficient_quota", "insufficient_quota"),
        "api_error": (500, "server_error", None),
        "overloaded": (503, "server_error", None),
    }

    def key_ok(self, headers: Any, api_key: str) -> bool:
        return headers.get("authorization") == f"Bearer {api_key}"

    def validate(self, body: dict[str, Any]) -> str | None:
        if not isinstance(body.get("model"), str):
            return "you must provide a model parameter"
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return "Missing required parameter: 'messages'."
        pending: list[str] = []
        for message in body["messages"]:
            role = message.get("role")
            if role == "tool":
                if message.get("tool_call_id") not in pending:
                    return (
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'."
                    )
                pending.remove(message["tool_call_id"])
                continue
            if pending:
                return (
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not "
                    f"have response messages: {', '.join(pending)}"
                )
            if role == "assistant":
                pending = [c.get("id") for c in message.get("tool_calls") or []]
        return None

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return body.get("max_completion_tokens") or body.get("max_tokens")

    def prompt(self, body: dict[str, Any], chars_per_token: float = 4.0) -> Prompt:
        tools = body.get("tools") or []
        total = tokens(len(_dumps({"messages": body["messages"], "tools": tools})), chars_per_token)
        head = _dumps(tools)
        digest, chars, prefixes = _hash(f"{body.get('model')}{head}"), len(head), []
        for message in body["messages"]:
            text = _dumps(message)
            digest.update(text.encode())
            chars += len(text)
            prefixes.append((digest.hexdigest(), min(total, tokens(chars, chars_per_token))))
        return Prompt(total, prefixes)

    def usage(self, prompt: Prompt, read: int, write: int, output: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt.total,
            "completion_tokens": output,
            "total_tokens": prompt.total + output,
            "prompt_tokens_details": {"cached_tokens": read, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def answer(self, index: int, body: dict[str, Any], reply: Reply, usage: dict) -> dict:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text or None,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{index:08d}{i:04d}",
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else _dumps(args),
                    },
                }
                for i, (name, args) in enumerate(reply.tool_calls)
            ]
        stop = _STOP_TO_OPENAI.get(reply.stop or "", reply.stop)
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": stop or ("tool_calls" if reply.tool_calls else "stop"),
        }
        return {
            "id": f"chatcmpl-{index:012d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [choice],
            "usage": usage,
            "service_tier": "default",
            "system_fingerprint": "fp_pd_local",
        }

    def stream(self, answer: dict[str, Any], body: dict[str, Any]) -> list[bytes]:
        """chat.completion.chunk deltas: the role, content pieces, each tool call's id
        and name then its argument pieces, a last chunk with the finish reason; with
        ``stream_options.include_usage`` a usage chunk (no choices) after it; then
        ``data: [DONE]``."""
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        keys = ("id", "created", "model", "service_tier", "system_fingerprint")
        head = {"object": "chat.completion.chunk", **{k: answer[k] for k in keys}}
        (choice,) = answer["choices"]
        message = choice["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            item = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**head, "choices": [item], **({"usage": None} if with_usage else {})}

        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": text}) for text in pieces(message["content"] or "")]
        for i, call in enumerate(message.get("tool_calls") or []):
            args = call["function"]["arguments"]
            function = {"name": call["function"]["name"], "arguments": args}
            if isinstance(args, str):
                function["arguments"] = ""
            first = {"index": i, "id": call["id"], "type": "function", "function": function}
            chunks.append(chunk({"tool_calls": [first]}))
            if isinstance(args, str):
                rest = [{"index": i, "function": {"arguments": text}} for text in pieces(args)]
                chunks += [chunk({"tool_calls": [part]}) for part in rest]
        chunks.append(chunk({}, choice["finish_reason"]))
        if with_usage:
            chunks.append({**head, "choices": [], "usage": answer["usage"]})
        return [f"data: {_dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]

    def error(self, kind: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        status, type_, code = self._errors[kind]
        if kind == "rate_limit" and extra.get("bucket") == "requests":
            type_ = "requests"
        return status, {"error": {"message": message, "type": type_, "param": None, "code": code}}

    def limit_headers(self, state: dict[str, tuple[int, int, float]]) -> dict[str, str]:
        headers = {}
        if "requests" in state:
            limit, remaining, reset = state["requests"]
            headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(remaining)
            headers["x-ratelimit-reset-requests"] = go_duration(reset)
        # OpenAI has one token bucket: report the configured ones summed.
        token_buckets = [state[k] for k in ("input_tokens", "output_tokens") if k in state]
        if token_buckets:
            headers["x-ratelimit-limit-tokens"] = str(sum(b[0] for b in token_buckets))
            headers["x-ratelimit-remaining-tokens"] = str(sum(b[1] for b in token_buckets))
            headers["x-ratelimit-reset-tokens"] = go_duration(max(b[2] for b in token_buckets))
        return headers

    def request_id_header(self, index: int) -> dict[str, str]:
        return {"x-request-id": f"req_{index:012d}"}

    def unknown_model(self, model: str) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    def model_list(self, models: list[str]) -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "pd-local"} for m in models]
        return {"object": "list", "data": data}


DIALECTS: dict[str, Dialect] = {d.path: d for d in (Anthropic(), OpenAI())}


def pieces(text: str, size: int = 16) -> list[str]:
    """A text cut as a model streams it: a few characters per delta."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def masked(key: str) -> str:
    """How OpenAI echoes a wrong key: never the whole of it."""
    return f"{key[:3]}{'*' * max(4, len(key) - 7)}{key[-4:]}" if len(key) > 10 else "****"


def fault_message(api: str, kind: str, model: str) -> str:
    """The message each API gives for an injected fault."""
    anthropic = api == "anthropic"
    if kind == "429":
        if anthropic:
            return "This request would exceed your organization's rate limit. Try again later."
        return f"Rate limit reached for {model} in organization org-local. Please try again later."
    if kind == "529":
        return "Overloaded" if anthropic else "The server is overloaded or not ready yet."
    if kind == "500":
        if anthropic:
            return "Internal server error"
        return "The server had an error while processing your request. Sorry about that!"
    if kind == "400":
        if anthropic:
            return "prompt is too long: 210000 tokens > 200000 maximum"
        return (
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 210000 tokens. Please reduce the length of the messages."
        )
    if anthropic:  # spend_limit
        month = datetime.now(UTC).replace(day=1)
        next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
        return (
            "You have reached your specified API usage limits. You will regain access on "
            f"{next_month:%Y-%m-%d} at 00:00 UTC."
        )
    return (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
