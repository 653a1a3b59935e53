"""Imported last by the workers' forkserver (see ``providers.preload_modules``).

It makes one call through each SDK the forkserver imported before it, to a local API
server on loopback (``orchestrator.testing.apiserver``; nothing leaves the machine, nothing is
billed), so that every worker forked from it starts with the SDK's lazy imports done
(host name encoding, the HTTP transport, tracing propagators) and its response models
built. Otherwise each worker pays for them, tens of milliseconds of CPU sixteen times over
on a small machine, between a permit's grant and its request reaching the provider.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

from orchestrator.errors import ProviderError
from orchestrator.providers.base import ModelRequest
from orchestrator.testing.apiserver import LocalAPIServer, Reply

KEY = "warm-up"
REPLY = Reply("-", [("finish", {"summary": "-"})], output_tokens=1)


def warm_loaded_sdks() -> None:
    threads = threading.active_count()
    with LocalAPIServer([REPLY, REPLY], api_key=KEY) as server:
        if "anthropic" in sys.modules:
            from orchestrator.providers.anthropic import AnthropicProvider

            _call(AnthropicProvider("claude-haiku-4-5", KEY, base_url=server.url))
        if "openai" in sys.modules:
            from orchestrator.providers.openai import OpenAIProvider

            _call(OpenAIProvider("gpt-4o-mini", KEY, base_url=server.url + "/v1"))
    # Forking with a thread still running would copy its locks held: wait for the
    # server's connection threads to end (they do once the server closed the sockets).
    deadline = time.monotonic() + 2
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)


def _call(provider: Any) -> None:
    """The request path alone (``warm``), then a whole call (connection, answer)."""
    request = ModelRequest("-", [{"role": "user", "content": "-"}], [], 1, "", "", 0)
    with contextlib.suppress(ProviderError):  # a warm-up: its failure only costs time
        provider.warm()
        provider.complete(request)


warm_loaded_sdks()
