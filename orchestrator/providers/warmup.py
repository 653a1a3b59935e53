"""Warm the SDKs before workers fork: ``prewarm`` runs this in the workers' forkserver.

It makes one call through each SDK the forkserver imported before it, to a tiny
responder on loopback that answers every request with one canned streamed answer
(nothing leaves the machine, nothing is billed), so that every worker forked from it
starts with the SDK's lazy imports done (host name encoding, the HTTP transport, tracing
propagators) and its response models built. Otherwise each worker pays for them, tens of
milliseconds of CPU sixteen times over on a small machine, between a permit's grant and
its request reaching the provider.

The responder is this module's own, not the test suite's API server: nothing a real run
imports may depend on test code.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from orchestrator.errors import ProviderError
from orchestrator.providers.base import ModelRequest, ModelResponse

KEY = "warm-up"
ARGUMENTS = json.dumps({"summary": "-"})


def _sse(events: list[dict[str, Any]], named: bool) -> bytes:
    lines = [
        (f"event: {e['type']}\n" if named else "") + f"data: {json.dumps(e)}\n\n" for e in events
    ]
    return "".join(lines).encode() + (b"" if named else b"data: [DONE]\n\n")


ANTHROPIC_STREAM = _sse(
    [
        {
            "type": "message_start",
            "message": {
                "id": "msg_warm",
                "type": "message",
                "role": "assistant",
                "model": "warm",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_warm",
                "name": "finish",
                "input": {},
            },
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": ARGUMENTS},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 1},
        },
        {"type": "message_stop"},
    ],
    named=True,
)
_CHUNK = {"id": "chatcmpl-warm", "object": "chat.completion.chunk", "created": 0, "model": "warm"}
OPENAI_STREAM = _sse(
    [
        {
            **_CHUNK,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_warm",
                                "type": "function",
                                "function": {"name": "finish", "arguments": ARGUMENTS},
                            }
                        ],
                    },
                    "finish_reason": None,
                }
            ],
        },
        {**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    ],
    named=False,
)


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # a client that connects and says nothing cannot hold the warm-up

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = ANTHROPIC_STREAM if self.path.endswith("/messages") else OPENAI_STREAM
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(body)))
        self.send_header("connection", "close")  # one answer per connection: never held
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def responder() -> Iterator[str]:
    """A loopback HTTP server answering every request with the canned stream; its URL."""
    server = HTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def warm_loaded_sdks() -> None:
    threads = threading.active_count()
    with responder() as url:
        if "anthropic" in sys.modules:
            from orchestrator.providers.anthropic import AnthropicProvider

            warm(AnthropicProvider("claude-haiku-4-5", KEY, base_url=url))
        if "openai" in sys.modules:
            from orchestrator.providers.openai import OpenAIProvider

            warm(OpenAIProvider("gpt-4o-mini", KEY, base_url=url + "/v1"))
    # Forking with a thread still running would copy its locks held: wait for the
    # SDKs' connection threads to end (they do once the server closed the sockets).
    deadline = time.monotonic() + 2
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)


def warm(provider: Any) -> ModelResponse | None:
    """The request path alone (``warm``), then a whole call (connection, answer)."""
    request = ModelRequest("-", [{"role": "user", "content": "-"}], [], 1, "", "", 0)
    with contextlib.suppress(ProviderError):  # a warm-up: its failure only costs time
        provider.warm()
        return provider.complete(request)
    return None
