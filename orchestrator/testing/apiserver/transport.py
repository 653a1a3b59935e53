"""The HTTP side of the local API server: threads, keep-alive, chunked streaming.

Apart from ``server.py`` so that the request logic (auth, limits, caching, faults) reads
without socket plumbing, and the plumbing without API details: the handler only hands
each request to the app and writes back the ``Outcome`` it returns.
"""

from __future__ import annotations

import json
import socket
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
_REASONS |= {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_REASONS |= {529: "Overloaded"}


@dataclass
class Outcome:
    """One answer to write: status, body, headers, after ``delay`` seconds."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    events: list[bytes] | None = None  # server-sent events, written one chunk each


class App(Protocol):
    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> Outcome: ...


class HTTPServer(ThreadingHTTPServer):
    """Serves ``app`` and tracks open connections, so ``stop`` can close the kept-alive ones."""

    daemon_threads = True
    request_queue_size = 256  # 16 workers connecting at once must not hit a full backlog

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so SDK connection pools are reused
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server_version = "pd-local-api/1"
    sys_version = ""
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve("POST", self.rfile.read(length) if length else b"")

    def do_GET(self) -> None:
        self._serve("GET", b"")

    def _serve(self, method: str, raw: bytes) -> None:
        try:
            outcome = self.server.app.handle(method, self.path, self.headers, raw)
        except Exception as exc:  # a broken replies/faults callable: say so, keep serving
            traceback.print_exc()
            error = {"type": "api_error", "message": f"local API server: {exc!r}"}
            body = json.dumps({"type": "error", "error": error}).encode()
            outcome = Outcome(500, body, {"content-type": "application/json"})
        self._send(outcome)

    def _send(self, outcome: Outcome) -> None:
        if outcome.delay:
            time.sleep(outcome.delay)
        try:
            self.send_response(outcome.status, _REASONS.get(outcome.status, ""))
            for name, value in outcome.headers.items():
                self.send_header(name, value)
            if outcome.events is None:
                self.send_header("content-length", str(len(outcome.body)))
                self.end_headers()
                self.wfile.write(outcome.body)
                return
            # Streamed as the APIs do: chunked, one event per chunk, each sent at once.
            self.send_header("cache-control", "no-cache")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in outcome.events:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up (a timeout test): nothing left to tell it
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is ``LocalAPIServer.requests``."""
