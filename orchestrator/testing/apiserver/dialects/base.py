"""What every wire format of the local server provides, and the helpers they share.

A ``Dialect`` knows its auth header, its request checks, how its prompt is counted and
cached, and the exact shapes and wording of its answers, errors and rate-limit headers,
so the real SDKs parse everything into their own typed objects and exception classes.
The server itself stays API-neutral: it only ever asks the request's dialect.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from orchestrator.testing.apiserver.script import Reply

dumps = json.dumps
# How each bucket is named in a rate-limit refusal's message.
BUCKET_WORDS = {
    "requests": "requests",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
}


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

    def auth_message(self, headers: Any) -> str:
        """The 401 message for a wrong key (``headers`` carry the one given)."""
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

    def fault_message(self, kind: str, model: str) -> str:
        """The message this API gives for an injected fault (``429``, ``529``, ``500``,
        ``400``, ``spend_limit``)."""
        raise NotImplementedError

    def limit_message(self, bucket: str, limit: int, window: float, model: str, wait: float) -> str:
        """The message of a 429 from the server's own sliding windows."""
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


def prefix_hash(seed: str) -> Any:
    """A running digest of a prompt's prefix: a cache key once ``hexdigest``-ed."""
    return hashlib.sha1(seed.encode(), usedforsecurity=False)


def pieces(text: str, size: int = 16) -> list[str]:
    """A text cut as a model streams it: a few characters per delta."""
    return [text[i : i + size] for i in range(0, len(text), size)]
