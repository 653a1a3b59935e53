"""A local HTTP server that speaks the Anthropic and OpenAI APIs well enough for their SDKs.

Shipped for pd's tests and for users' own: scripted replies (tool calls included),
realistic usage numbers with prompt caching, enforced sliding-window rate limits with the
real rate-limit headers, and injectable faults. Every request is logged with its arrival
time, so a test can check limits from the server's side::

    with LocalAPIServer([Reply(tool_calls=[("finish", {"summary": "done"})])]) as server:
        client = anthropic.Anthropic(api_key="test-key", base_url=server.url)
        ...
        assert max_window_usage(server.requests, 60)["requests"] <= 50

Run it on its own with ``python -m orchestrator.testing.apiserver --port 8765``.
"""

from orchestrator.limits.headers import parse_go_duration
from orchestrator.testing.apiserver.limits import go_duration, max_window_usage
from orchestrator.testing.apiserver.script import FAULT_KINDS, Fault, Reply, load_replies
from orchestrator.testing.apiserver.server import LocalAPIServer

__all__ = [
    "FAULT_KINDS",
    "Fault",
    "LocalAPIServer",
    "Reply",
    "go_duration",
    "load_replies",
    "max_window_usage",
    "parse_go_duration",
]
