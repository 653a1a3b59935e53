"""LocalAPIServer: a threaded HTTP server that answers like the Anthropic and OpenAI APIs.

One request goes: auth, body checks, injected fault, then (under one lock) the rate-limit
decision, prompt-cache lookup, reply pick and log entry; the answer is written after the
lock is released, so slow replies and latency never hold other requests up. What differs
between the APIs is asked of the request's dialect (``dialects/``); sockets and streaming
are ``transport.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from typing import Any

from orchestrator.testing.apiserver.dialects import DIALECTS
from orchestrator.testing.apiserver.dialects.base import Dialect, Prompt, tokens
from orchestrator.testing.apiserver.limits import SlidingWindows
from orchestrator.testing.apiserver.script import (
    DEFAULT_REPLY,
    FaultSource,
    Reply,
    ReplySource,
    as_fault,
    as_reply,
)
from orchestrator.testing.apiserver.transport import HTTPServer, Outcome

_FAULT_ERRORS = {"429": "rate_limit", "529": "overloaded", "500": "api_error"}
_FAULT_ERRORS |= {"400": "invalid_request", "spend_limit": "spend_limit"}


class LocalAPIServer:
    """Answers ``POST /v1/messages`` and ``POST /v1/chat/completions`` on loopback (with
    ``"stream": true`` as server-sent events), ``GET /v1/models`` (in the shape of the API
    whose headers came) and ``POST /v1/messages/count_tokens``.

    ``replies``: a list consumed in order by both endpoints, or ``(api, body) -> Reply``
    (called before the rate-limit decision, so also for requests then refused).
    ``faults``: a list indexed by model call (requests to /v1/messages and
    /v1/chat/completions, in arrival order), or ``(index, api, body) -> Fault|None``.
    ``count_faults``: the same for token counts, by count number (``(index, body)`` for a
    callable); a fault that answers with an error (not ``malformed`` or ``object_args``).
    ``chars_per_token``: how densely prompts are tokenized (the input of both a model
    call and a token count; 4 as for English, lower counts more tokens for the same text).
    ``limits``: ``dict(requests=, input_tokens=, output_tokens=, window=seconds)``, any
    subset (the rest get ``DEFAULT_LIMITS``), enforced over sliding windows of each API
    apart, and reported in each API's rate-limit headers on every answer.
    ``models``: the models served; any other is a 404 in the API's shape (None: any).
    ``requests`` logs every request (``calls``: the model calls among them); token
    fields follow pd's Usage (input excludes cache reads and writes) and
    ``counted_input`` is what the input bucket counted.
    """

    def __init__(
        self,
        replies: ReplySource = None,
        *,
        limits: dict[str, float] | None = None,
        faults: FaultSource = None,
        api_key: str = "test-key",
        output_mode: str = "script",
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        keep_bodies: bool = True,
        models: list[str] | None = None,
        count_faults: FaultSource = None,
        chars_per_token: float = 4.0,
    ) -> None:
        if output_mode not in ("script", "max"):
            raise ValueError(f"output_mode must be 'script' or 'max', not {output_mode!r}")
        if not chars_per_token > 0:
            raise ValueError(f"chars_per_token must be above 0, not {chars_per_token!r}")
        self.replies = replies if callable(replies) else list(replies or [])
        self.faults = faults
        self.count_faults = count_faults
        self.chars_per_token = chars_per_token
        self.api_key = api_key
        self.output_mode = output_mode
        self.latency = latency
        self.host, self.port = host, port
        self.keep_bodies = keep_bodies
        self.models = list(models) if models is not None else None
        self.windows = {d.api: SlidingWindows(limits) for d in DIALECTS.values()}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._count = 0
        self._calls, self._counts = 0, 0  # faults are picked by these numbers
        self._cached: set[str] = set()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Anthropic SDK's base_url; the OpenAI SDK's is ``url + "/v1"``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalAPIServer:
        self._httpd = HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        # Keep-alive connections would otherwise go on being served by their threads.
        for sock in list(httpd.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> LocalAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def calls(self) -> list[dict[str, Any]]:
        """The model calls in ``requests`` (not model lists, not token counts)."""
        return [r for r in self.requests if r["path"] not in (MODELS, COUNT_TOKENS)]

    # ---- one request ---------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Any, raw: bytes) -> Outcome:
        path = path.split("?", 1)[0]
        dialect = _route(method, path, headers)
        with self._lock:
            index, self._count = self._count, self._count + 1
            call = self._calls  # this request's number among model calls
            if path not in (MODELS, COUNT_TOKENS):
                self._calls += 1
        entry = self._entry(index, dialect, path)
        if dialect is None:
            guess = DIALECTS["/v1/chat/completions" if "/chat/" in path else "/v1/messages"]
            return self._fail(entry, guess, "not_found", f"Not found: {method} {path}")
        entry["api_key_ok"] = dialect.key_ok(headers, self.api_key)
        if not entry["api_key_ok"]:
            message = dialect.auth_message(headers)
            return self._fail(entry, dialect, "authentication", message)
        if path == MODELS:
            with self._lock:
                models = self.models or sorted(
                    {str(r["model"]) for r in self.requests if r["model"]}
                )
            return self._done(entry, dialect, dialect.model_list(models))
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
            entry.update(model=body.get("model"), max_tokens=dialect.max_tokens(body))
            entry["stream"] = body.get("stream") is True
            if self.keep_bodies:
                entry["body"] = body
            if path == COUNT_TOKENS:  # no max_tokens here: checked with a stand-in
                body = {"max_tokens": 1, **body}
            problem = dialect.validate(body)
            prompt = dialect.prompt(body, self.chars_per_token)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return self._fail(entry, dialect, "invalid_request", f"invalid request body: {exc}")
        marks = len(prompt.prefixes) if dialect.explicit_cache else 0
        if not problem and marks > 4:
            problem = f"A maximum of 4 blocks with cache_control may be provided. Found {marks}."
        if problem:
            return self._fail(entry, dialect, "invalid_request", problem)
        if self.models is not None and body["model"] not in self.models:
            message = dialect.unknown_model(body["model"])
            return self._fail(entry, dialect, "model_not_found", message)
        if path == COUNT_TOKENS:
            return self._count_tokens(entry, dialect, body, prompt)
        return self._answer(entry, dialect, body, prompt, call)

    def _count_tokens(self, entry: dict, dialect: Dialect, body: dict, prompt: Prompt) -> Outcome:
        """The prompt's tokens as a call would bill them (a reply's ``extra_input_tokens``
        aside: the count cannot know which reply comes), or an injected fault."""
        with self._lock:
            number, self._counts = self._counts, self._counts + 1
        fault = as_fault(_pick(self.count_faults, number, body))
        if fault is not None and fault.kind not in (*_FAULT_ERRORS, "slow"):
            raise ValueError(f"count_faults: {fault.kind!r} is no fault of a token count")
        if fault is not None and fault.kind in _FAULT_ERRORS:
            entry["fault"] = fault.kind
            return self._fault_error(entry, dialect, body, fault)
        outcome = self._done(entry, dialect, {"input_tokens": prompt.total})
        if fault is not None:
            entry["fault"] = fault.kind
            outcome.delay = fault.delay or 5.0
        return outcome

    def _answer(
        self, entry: dict, dialect: Dialect, body: dict, prompt: Prompt, call: int
    ) -> Outcome:
        api = dialect.api
        fault = as_fault(_pick(self.faults, call, api, body))
        kind = fault.kind if fault else ""
        if kind in _FAULT_ERRORS:
            entry["fault"] = kind
            return self._fault_error(entry, dialect, body, fault)
        reply = as_reply(self.replies(api, body)) if callable(self.replies) else None
        with self._lock:
            now = time.monotonic()
            if reply is None:
                reply = as_reply(self.replies[0]) if self.replies else DEFAULT_REPLY
            output = self._output_tokens(reply, entry["max_tokens"])
            if reply.extra_input_tokens:
                prompt = Prompt(prompt.total + reply.extra_input_tokens, prompt.prefixes)
            read, write = self._cache_split(dialect, prompt)
            counted = prompt.total - read if dialect.explicit_cache else prompt.total
            refusal = self.windows[api].admit(now, counted, output)
            if refusal is None:
                self._cached.update(key for key, _ in prompt.prefixes)
                if not callable(self.replies) and self.replies and kind != "malformed":
                    self.replies.pop(0)
            entry.update(arrived=now, arrived_wall=time.time(), counted_input=counted)
            entry["fault"] = kind or None
            entry.update(input_tokens=prompt.total - read - write, output_tokens=output)
            entry.update(cache_read=read, cache_write=write)
            entry["status"] = 200 if refusal is None else 429
            state = self._log(entry, now, api)
        if refusal is not None:
            return self._limited(entry, dialect, state, refusal)
        usage = dialect.usage(prompt, read, write, output)
        entry["usage"] = usage
        answer = dialect.answer(entry["index"], body, reply, usage)
        if kind == "object_args":
            _arguments_as_objects(answer)
        delay = self.latency + ((fault.delay or 5.0) if kind == "slow" else 0.0)
        if entry["stream"]:
            events = dialect.stream(answer, body)
            if kind == "malformed":  # cut off: Anthropic's message_start (with usage) gets out
                events = events[: max(2, len(events) // 2)]
            outcome = self._outcome(200, b"", dialect, entry, state, delay=delay)
            outcome.headers["content-type"] = "text/event-stream; charset=utf-8"
            outcome.events = events
            return outcome
        data = json.dumps(answer).encode()
        if kind == "malformed":
            data = data[: len(data) // 2]
        return self._outcome(200, data, dialect, entry, state, delay=delay)

    # ---- pieces ----------------------------------------------------------------------

    def _entry(self, index: int, dialect: Dialect | None, path: str) -> dict[str, Any]:
        return {
            "index": index,
            "api": dialect.api if dialect else None,
            "path": path,
            "arrived": time.monotonic(),
            "arrived_wall": time.time(),
            "status": None,
            "model": None,
            "max_tokens": None,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read": 0,
            "cache_write": 0,
            "counted_input": 0,
            "api_key_ok": None,
            "fault": None,
            "retry_after": None,
            "stream": False,
        }

    def _cache_split(self, dialect: Dialect, prompt: Prompt) -> tuple[int, int]:
        """(read, write) tokens: the longest prefix seen before is read; Anthropic writes
        the rest up to its last breakpoint. The caller holds the lock."""
        read = max((n for key, n in prompt.prefixes if key in self._cached), default=0)
        if dialect.explicit_cache and prompt.prefixes and prompt.prefixes[-1][1] > read:
            return read, prompt.prefixes[-1][1] - read
        return read, 0

    def _log(self, entry: dict, now: float, api: str) -> dict[str, tuple[int, int, float]]:
        """Append to the log; the caller holds the lock. Returns ``api``'s buckets' state."""
        self.requests.append(entry)
        return self.windows[api].state(now)

    def _done(self, entry: dict, dialect: Dialect, answer: dict[str, Any]) -> Outcome:
        """A 200 that is not a model call (a model list, a token count)."""
        entry["status"] = 200
        with self._lock:
            state = self._log(entry, time.monotonic(), dialect.api)
        return self._outcome(200, json.dumps(answer).encode(), dialect, entry, state)

    def _output_tokens(self, reply: Reply, max_tokens: int | None) -> int:
        if self.output_mode == "max" and max_tokens:
            return max_tokens
        count = reply.output_tokens
        if count is None:
            count = max(1, tokens(len(reply.content_json())))
        return min(count, max_tokens) if max_tokens else count

    def _fail(self, entry: dict, dialect: Dialect, kind: str, message: str) -> Outcome:
        status, data = dialect.error(kind, message, request_id=f"req_{entry['index']:012d}")
        entry["status"] = status
        with self._lock:
            state = self._log(entry, time.monotonic(), dialect.api)
        return self._outcome(status, json.dumps(data).encode(), dialect, entry, state)

    def _fault_error(self, entry: dict, dialect: Dialect, body: dict, fault: Any) -> Outcome:
        kind = _FAULT_ERRORS[fault.kind]
        message = dialect.fault_message(fault.kind, body.get("model", ""))
        status, data = dialect.error(kind, message, request_id=f"req_{entry['index']:012d}")
        entry["status"] = status
        headers = {}
        if fault.kind == "429":
            entry["retry_after"] = fault.retry_after if fault.retry_after is not None else 1.0
            headers = _retry_headers(entry["retry_after"])
        with self._lock:
            state = self._log(entry, time.monotonic(), dialect.api)
        return self._outcome(status, json.dumps(data).encode(), dialect, entry, state, headers)

    def _limited(self, entry: dict, dialect: Dialect, state: dict, refusal: tuple) -> Outcome:
        wait, buckets = refusal
        entry["retry_after"] = round(wait + 0.0005, 3)
        bucket = buckets[0]
        windows = self.windows[dialect.api]
        limit = windows.limits[bucket]
        message = dialect.limit_message(bucket, limit, windows.window, entry["model"], wait)
        kind = "requests" if bucket == "requests" else "tokens"
        request_id = f"req_{entry['index']:012d}"
        _, data = dialect.error("rate_limit", message, bucket=kind, request_id=request_id)
        headers = _retry_headers(entry["retry_after"])
        return self._outcome(429, json.dumps(data).encode(), dialect, entry, state, headers)

    def _outcome(
        self,
        status: int,
        data: bytes,
        dialect: Dialect,
        entry: dict,
        state: dict,
        extra: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> Outcome:
        headers = {"content-type": "application/json", **dialect.request_id_header(entry["index"])}
        headers |= dialect.limit_headers(state)
        headers |= extra or {}
        return Outcome(status, data, headers, delay)


def _pick(faults: FaultSource, index: int, *args: Any) -> Any:
    """The ``index``-th fault of a list, or what a callable says for it."""
    if callable(faults):
        return faults(index, *args)
    if faults and index < len(faults):
        return faults[index]
    return None


def _arguments_as_objects(answer: dict[str, Any]) -> None:
    """The ``object_args`` fault: OpenAI tool-call arguments sent as a JSON object
    instead of a string, as some OpenAI-compatible servers do. Anthropic's are objects."""
    for choice in answer.get("choices", []):
        for call in choice["message"].get("tool_calls") or []:
            with contextlib.suppress(ValueError):
                call["function"]["arguments"] = json.loads(call["function"]["arguments"])


def _retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` in whole seconds, rounded up, as both real APIs send it."""
    return {"retry-after": str(max(1, math.ceil(seconds)))}


MODELS, COUNT_TOKENS = "/v1/models", "/v1/messages/count_tokens"


def _route(method: str, path: str, headers: Any) -> Dialect | None:
    """The dialect of a request, None for an unknown one. ``/v1/models`` is both APIs'
    path: the Anthropic SDK always sends ``anthropic-version``."""
    if method == "GET" and path == MODELS:
        return DIALECTS[
            "/v1/messages" if headers.get("anthropic-version") else "/v1/chat/completions"
        ]
    if method == "POST" and path == COUNT_TOKENS:
        return DIALECTS["/v1/messages"]
    return DIALECTS.get(path) if method == "POST" else None
