"""The OpenAI Chat Completions API as the local server speaks it
(``POST /v1/chat/completions``).

OpenAI caches every prompt prefix on its own, reports one summed token bucket in
``x-ratelimit-*`` headers with Go-style reset durations, and streams
``chat.completion.chunk`` deltas ended by ``data: [DONE]``.
"""

from __future__ import annotations

import time
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
from orchestrator.testing.apiserver.limits import go_duration
from orchestrator.testing.apiserver.script import Reply

_STOP = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
_FAULTS = {
    "529": "The server is overloaded or not ready yet.",
    "500": "The server had an error while processing your request. Sorry about that!",
    "400": (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 210000 tokens. Please reduce the length of the messages."
    ),
    "spend_limit": (
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    ),
}


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

    def auth_message(self, headers: Any) -> str:
        given = (headers.get("authorization") or "").removeprefix("Bearer ")
        return (
            f"Incorrect API key provided: {masked(given)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )

    def fault_message(self, kind: str, model: str) -> str:
        if kind == "429":
            return (
                f"Rate limit reached for {model} in organization org-local. Please try again later."
            )
        return _FAULTS[kind]

    def limit_message(self, bucket: str, limit: int, window: float, model: str, wait: float) -> str:
        return (
            f"Rate limit reached for {model} in organization org-local on "
            f"{BUCKET_WORDS[bucket]} per {window:g} seconds: Limit {limit}. Please try again in "
            f"{go_duration(wait)}. Visit https://platform.openai.com/account/rate-limits "
            "to learn more."
        )

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
        everything = {"messages": body["messages"], "tools": tools}
        total = tokens(len(dumps(everything)), chars_per_token)
        head = dumps(tools)
        digest, chars, prefixes = prefix_hash(f"{body.get('model')}{head}"), len(head), []
        for message in body["messages"]:
            text = dumps(message)
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
                        "arguments": args if isinstance(args, str) else dumps(args),
                    },
                }
                for i, (name, args) in enumerate(reply.tool_calls)
            ]
        stop = _STOP.get(reply.stop or "", reply.stop)
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
        return [f"data: {dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]

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


def masked(key: str) -> str:
    """How OpenAI echoes a wrong key: never the whole of it."""
    return f"{key[:3]}{'*' * max(4, len(key) - 7)}{key[-4:]}" if len(key) > 10 else "****"
