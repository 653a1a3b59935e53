"""The Anthropic Messages API as the local server speaks it (``POST /v1/messages``).

Anthropic caches at the ``cache_control`` breakpoints a request marks, reports each
bucket (and ``tokens``, the tightest token bucket) in ``anthropic-ratelimit-*`` headers
with RFC 3339 reset times, and streams named server-sent events.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.testing.apiserver.dialects.base import (
    BUCKET_WORDS,
    Dialect,
    Prompt,
    dumps,
    pieces,
    prefix_hash,
    tokens,
)
from orchestrator.testing.apiserver.script import Reply

_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
_FAULTS = {
    "429": "This request would exceed your organization's rate limit. Try again later.",
    "529": "Overloaded",
    "500": "Internal server error",
    "400": "prompt is too long: 210000 tokens > 200000 maximum",
}


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

    def auth_message(self, headers: Any) -> str:
        return "invalid x-api-key"

    def fault_message(self, kind: str, model: str) -> str:
        if kind in _FAULTS:
            return _FAULTS[kind]
        month = datetime.now(UTC).replace(day=1)  # spend_limit
        next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
        return (
            "You have reached your specified API usage limits. You will regain access on "
            f"{next_month:%Y-%m-%d} at 00:00 UTC."
        )

    def limit_message(self, bucket: str, limit: int, window: float, model: str, wait: float) -> str:
        return (
            f"This request would exceed the rate limit for your organization of {limit} "
            f"{BUCKET_WORDS[bucket]} per {window:g} seconds. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits. You can see the response headers "
            "for current usage. Please reduce the prompt length or the maximum tokens "
            "requested, or try again later."
        )

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
        total = tokens(len(dumps(everything)), chars_per_token)
        segments: list[Any] = list(tools)
        segments += system if isinstance(system, list) else [system] if system else []
        for message in body["messages"]:
            content = message.get("content")
            segments += content if isinstance(content, list) else [content]
        digest, chars, prefixes = prefix_hash(str(body.get("model"))), 0, []
        for segment in segments:
            text = dumps(segment)
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
        stop = _STOP.get(reply.stop or "", reply.stop)
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
                text = block["input"] if isinstance(block["input"], str) else dumps(block["input"])
                deltas = [{"type": "input_json_delta", "partial_json": t} for t in pieces(text)]
            events.append({"type": "content_block_start", "index": i, "content_block": opened})
            events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
            events.append({"type": "content_block_stop", "index": i})
        stop = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
        events.append({"type": "message_delta", "delta": stop, "usage": usage})
        events.append({"type": "message_stop"})
        return [f"event: {e['type']}\ndata: {dumps(e)}\n\n".encode() for e in events]

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


def _rfc3339(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
