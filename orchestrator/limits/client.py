"""The worker's side of the permit protocol: no model call without a permit.

Every call first asks the coordinator for a rate-limit permit and a budget reservation
(``AcquireTokens``), then reports how it went (``CallDone``), so one limiter and one
ledger see every call of every worker. Retries go through the same door: a 429 pauses
the whole run at the coordinator, not just this worker.

The reservation's input is the provider's own count of the prompt where it has one
(Anthropic's token-counting endpoint), with a small margin; else, or when the count
fails, an estimate from the prompt's size with a large one (``estimate``).
"""

from __future__ import annotations

import itertools
import math
import random
import select
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection

from orchestrator.errors import AttemptEnded, PdError, ProviderError
from orchestrator.providers.base import ModelRequest, ModelResponse, Provider
from orchestrator.providers.errors import FatalError, PermitExpired, RetryableError
from orchestrator.providers.estimate import estimate_input_tokens
from orchestrator.system import oshints
from orchestrator.wire.messages import (
    AcquireTokens,
    CallDone,
    CallSent,
    Deny,
    Grant,
    Message,
    from_bytes,
)

RATE_LIMITED = {429, 529}
HALTING = {401, 403}  # the key is wrong or lacks access: every other call would fail too
PROVIDER_OVERHEAD = 1024  # tokens a provider may add to a prompt on its own
RESERVE_MARGIN = 1.25  # the budget reserves this much over the chars/3 estimate
COUNT_MARGIN = 1.02  # ... and this much over a provider's own count (see ``counted``)
COUNT_SLACK = 16  # ... plus these tokens
STOP_CHECK_MS = 100  # how often a wait for a permit looks whether the attempt was stopped
MALFORMED_RETRIES = 1  # an unreadable answer is the server's fault: one more try at most
SAME_ERROR_LIMIT = 3  # the same server error this many times in a row: retrying won't help


class BudgetExhausted(AttemptEnded):
    """The ledger would not reserve this call: the run or worker budget is spent."""


class PermitClient:
    """Asks for permits on the worker's permit pipe and waits there for the answer.

    The pipe is the worker's side channel to the coordinator's permit thread (see
    ``orchestrator/permitloop.py``): only the thread making model calls uses it, so the
    answer is read by the thread that waits for it, with no hand-over in between.
    """

    def __init__(self, worker_id: str, conn: Connection) -> None:
        self.worker_id = worker_id
        self.conn = conn
        self._ids = itertools.count(1)
        self.last_rtt: float | None = None
        self.send_by = 0.0
        self.max_output = 0  # the last grant's lower max_tokens (0: as asked)
        # One poll object for the client's life: ``Connection.poll`` builds a selector on
        # every call, which cost more than the rest of reading the answer.
        self._poller = select.poll()
        self._poller.register(conn.fileno(), select.POLLIN)

    def acquire(self, ask: dict, should_stop: Callable[[], bool]) -> tuple[int, int]:
        """Block until granted; returns (request id, permit id). Raises on denial or stop."""
        request_id = next(self._ids)
        sent = time.monotonic()
        self._send(AcquireTokens(worker_id=self.worker_id, request_id=request_id, **ask))
        with oshints.urgent():
            answer = self._answer(request_id, should_stop)
            got = time.monotonic()
        if isinstance(answer, Deny):
            if answer.budget:
                raise BudgetExhausted(answer.reason)
            raise ProviderError(answer.reason)
        # The round trip: until the grant was here and usable, less the limiter's wait.
        self.last_rtt = max(got, answer.not_before) - sent - answer.queued
        self.send_by = answer.send_by
        self.max_output = answer.max_output
        early = answer.not_before - time.monotonic()
        if early > 0:  # granted ahead of its time (GRANT_AHEAD): hold the call until then
            time.sleep(early)
        return request_id, answer.permit_id

    def _answer(self, request_id: int, should_stop: Callable[[], bool]) -> Grant | Deny:
        try:
            while True:
                if not self._poller.poll(STOP_CHECK_MS):
                    if should_stop():
                        self.done(request_id, -1, "withdrawn")
                        raise AttemptEnded("aborted while waiting for a rate-limit permit")
                    continue
                answer = from_bytes(self.conn.recv_bytes())
                # An answer to an earlier request that was withdrawn: the coordinator
                # already took that permit back when the withdrawal reached it.
                if isinstance(answer, Grant | Deny) and answer.request_id == request_id:
                    return answer
        except (EOFError, OSError):
            raise AttemptEnded("the coordinator is gone: no permit for model calls") from None

    def sent(self, request_id: int, permit_id: int, at: float) -> None:
        """Tell the limiter when the call went on the wire (from the SDK's request hook)."""
        self._send(CallSent(self.worker_id, request_id, permit_id, at))

    def done(self, request_id: int, permit_id: int, status: str, **details: object) -> None:
        self._send(
            CallDone(
                worker_id=self.worker_id,
                request_id=request_id,
                permit_id=permit_id,
                status=status,
                **details,  # type: ignore[arg-type]
            )
        )

    def _send(self, message: Message) -> None:
        try:
            self.conn.send_bytes(message.to_bytes())
        except OSError:
            raise AttemptEnded("the coordinator is gone: no permit for model calls") from None


class MeteredProvider:
    """Wraps a real provider: permit before, report after, retry through the limiter."""

    def __init__(
        self,
        inner: Provider,
        permits: PermitClient,
        estimate: Callable[[ModelRequest], tuple[int, int]],
        should_stop: Callable[[], bool] = lambda: False,
        max_retries: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.permits = permits
        self.estimate = estimate
        self.should_stop = should_stop
        self.max_retries = max_retries
        self.sleep = sleep
        self._calling: tuple[int, int] | None = None  # (request id, permit id) on the wire
        gate = getattr(inner, "gate", None)  # the SDK providers' HTTP request hook
        if gate is not None:
            gate.on_send = self._on_send

    def _on_send(self, at: float) -> None:
        if self._calling is not None:
            self.permits.sent(*self._calling, at)

    def complete(self, request: ModelRequest) -> ModelResponse:
        last: PdError | None = None
        retry, malformed, repeats = 0, 0, 0
        likely, upper = self._input(request)  # once: every retry sends the same input
        while retry <= self.max_retries:
            ask = {
                "task_id": request.task_id,
                "provider": self.name,
                "model": request.model,
                "input_tokens": likely,
                "max_output": request.max_tokens,
                "worst_case_input": upper,
            }
            request_id, permit_id = self.permits.acquire(ask, self.should_stop)
            if self.permits.send_by and time.monotonic() > self.permits.send_by:
                # Too late to send on this permit (this process was starved of CPU): the
                # limiter's windows only hold for calls sent within its margin. Ask again.
                self.permits.done(request_id, permit_id, "expired")
                continue
            # The budget may have granted a smaller max_tokens than asked: what is left.
            max_tokens = self.permits.max_output or request.max_tokens
            sent = replace(request, send_by=self.permits.send_by, max_tokens=max_tokens)
            self._calling = (request_id, permit_id)
            try:
                response = self.inner.complete(sent)
            except PermitExpired:  # found so just before sending, by the provider's SendGate
                self.permits.done(request_id, permit_id, "expired")
                continue
            except RetryableError as exc:
                repeats = repeats + 1 if _same_server_error(exc, last) else 1
                last, retry = exc, retry + 1
                malformed += exc.malformed
                # Rate limited: the coordinator pauses everyone until retry-after (or a
                # back-off of its own); other transient faults back off here only.
                pause = exc.retry_after if exc.retry_after is not None else _backoff(retry - 1)
                limited = exc.status in RATE_LIMITED
                self._settle_failed(request_id, permit_id, exc, pause if limited else None)
                if malformed > MALFORMED_RETRIES:
                    raise ProviderError(
                        f"{self.name}: gave up: the API server sent {malformed} malformed "
                        f"responses (its fault, not the model's): {exc}"
                    ) from None
                if repeats >= SAME_ERROR_LIMIT:
                    raise ProviderError(
                        f"{self.name}: gave up: the API server failed {repeats} times in a row "
                        f"with the same error: {exc}"
                    ) from None
                if not limited:
                    self.sleep(pause)
                continue
            except FatalError as exc:
                halt = exc.spend_limit or exc.status in HALTING
                self.permits.done(request_id, permit_id, "fatal", error=str(exc), halt=halt)
                raise
            except BaseException as exc:
                self.permits.done(request_id, permit_id, "fatal", error=repr(exc))
                raise
            finally:
                self._calling = None
            self.permits.done(
                request_id,
                permit_id,
                "ok",
                usage=response.usage.to_dict(),
                headers=dict(getattr(response, "headers", {}) or {}),
                permit_rtt=self.permits.last_rtt,
            )
            return response
        raise ProviderError(f"{self.name}: gave up after {self.max_retries} retries: {last}")

    def _input(self, request: ModelRequest) -> tuple[int, int]:
        """(likely input tokens, input to reserve): from the provider's count when it
        offers one, else from the estimate. A count is not a model call: no permit, no
        charge, one short try (the provider's), and a failed count costs only precision."""
        count = getattr(self.inner, "count_input_tokens", None)
        if count is not None:
            try:
                tokens = count(request)
            except ProviderError:
                tokens = None
            if tokens is not None:
                return counted(tokens)
        return self.estimate(request)

    def _settle_failed(
        self, request_id: int, permit_id: int, exc: RetryableError, retry_after: float | None
    ) -> None:
        """A failed call's permit back. An answer that came back but could not be used
        (cut off, malformed) is billed all the same: what it reported is booked as spent."""
        headers = dict(exc.headers or {})
        if exc.usage is not None:
            usage = exc.usage.to_dict()
            rtt = self.permits.last_rtt
            self.permits.done(
                request_id, permit_id, "ok", usage=usage, headers=headers, permit_rtt=rtt
            )
            return
        self.permits.done(
            request_id, permit_id, "retry", error=str(exc), retry_after=retry_after, headers=headers
        )


def _same_server_error(exc: RetryableError, last: PdError | None) -> bool:
    """A server error (5xx, not an overload) that repeats word for word."""
    server = exc.status is not None and exc.status >= 500 and exc.status not in (503, 529)
    return server and isinstance(last, RetryableError) and str(last) == str(exc)


def _backoff(retry: int) -> float:
    """Exponential with full jitter, capped: spreads retries of many workers apart."""
    return random.uniform(0.5, 1.0) * min(30.0, 2.0**retry)


def counted(tokens: int) -> tuple[int, int]:
    """(likely input tokens, input to reserve) from the provider's own count.

    The count is the provider's tokenizer run on the very prompt the call sends, tools,
    cache breakpoints and what the API adds itself included, so the margin is small:
    Anthropic calls its count an estimate that may differ from what the call is billed
    "by a small amount". ``COUNT_MARGIN`` covers a difference that grows with the prompt,
    ``COUNT_SLACK`` one that does not (a few framing tokens, which weigh most in a short
    prompt). A count that still falls short is an overrun: spent all the same, and the
    model's later reservations grow (``permitdesk``).
    """
    return tokens, math.ceil(tokens * COUNT_MARGIN) + COUNT_SLACK


def estimate(request: ModelRequest) -> tuple[int, int]:
    """(likely input tokens for the limiter, the input the budget reserves for), when the
    provider cannot count them itself (``counted``) or its count failed.

    The likely count is a third of the prompt's UTF-8 bytes, where real tokenizers give
    about a quarter for English and code (and about one token per character of CJK
    text, at three bytes each). The budget reserves ``RESERVE_MARGIN`` times that, plus
    room for what the provider adds itself (Anthropic's tool-use system prompt is a few
    hundred tokens). Reserving a byte per token, as pd once did, was safe but three to
    four times too much: it stopped runs with most of their budget unspent. A prompt
    that tokenizes denser still is caught when it settles: the coordinator records the
    overrun and reserves that model's later calls larger (see ``permitdesk``).
    """
    likely = estimate_input_tokens(request)
    return likely, math.ceil(likely * RESERVE_MARGIN) + PROVIDER_OVERHEAD
