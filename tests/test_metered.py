"""The worker side of the permit protocol, over a real pipe, answered by a thread."""

from __future__ import annotations

import math
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import pytest

from orchestrator.errors import AttemptEnded, ProviderError
from orchestrator.limits.client import (
    COUNT_MARGIN,
    COUNT_SLACK,
    PROVIDER_OVERHEAD,
    RESERVE_MARGIN,
    MeteredProvider,
    PermitClient,
    estimate,
)
from orchestrator.providers.base import ModelRequest, ModelResponse, Usage
from orchestrator.providers.errors import PermitExpired, RetryableError
from orchestrator.providers.estimate import estimate_input_tokens
from orchestrator.providers.sdkgate import SendGate
from orchestrator.wire.messages import AcquireTokens, CallDone, CallSent, Grant, Message, from_bytes


class Desk:
    """The coordinator's end: answers each AcquireTokens with a Grant, the first
    ``late`` already past their send_by; ``silent`` asks get no answer at all."""

    def __init__(
        self,
        conn: Connection,
        late: int = 0,
        silent: int = 0,
        ahead: float = 0.0,
        max_output: int = 0,
    ) -> None:
        self.conn, self.late, self.silent, self.ahead = conn, late, silent, ahead
        self.max_output = max_output
        self.got: list[Message] = []
        self.starts: list[float] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        try:
            while True:
                message = from_bytes(self.conn.recv_bytes())
                self.got.append(message)
                if isinstance(message, AcquireTokens):
                    if self.silent > 0:
                        self.silent -= 1
                        continue
                    self.answer(message.request_id, late=self.late > 0)
                    self.late -= 1
        except (EOFError, OSError):
            return

    def answer(self, request_id: int, late: bool = False) -> None:
        deadline = time.monotonic() - 1 if late else time.monotonic() + 60
        start = time.monotonic() + self.ahead if self.ahead else 0.0
        # As the desk does: a grant made ahead counts its wait up to its start as queued.
        grant = Grant(
            request_id,
            request_id,
            self.ahead,
            send_by=deadline,
            not_before=start,
            max_output=self.max_output,
        )
        self.starts.append(start)
        self.conn.send_bytes(grant.to_bytes())


class Model:
    name = "anthropic"

    def __init__(self) -> None:
        self.calls = 0
        self.sent_at: list[float] = []

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        self.sent_at.append(time.monotonic())
        self.max_tokens = request.max_tokens
        return ModelResponse("ok", [], "end_turn", Usage(10, 2))


def request() -> ModelRequest:
    return ModelRequest("", [{"role": "user", "content": "x"}], [], 8, "m", "t", 1)


ASK = {"task_id": "t", "provider": "anthropic", "model": "m", "input_tokens": 1,
       "max_output": 1, "worst_case_input": 1}  # fmt: skip


def test_a_permit_past_its_send_by_is_returned_unused_and_asked_again() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs, late=2), Model()
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100), max_retries=0)
    assert provider.complete(request()).text == "ok"
    ours.close()
    desk.thread.join(2)
    done = [m for m in desk.got if isinstance(m, CallDone)]
    assert [d.status for d in done] == ["expired", "expired", "ok"]
    assert model.calls == 1  # never sent on an expired permit
    assert done[-1].permit_rtt is not None and done[-1].usage["input_tokens"] == 10


class LateOnce(Model):
    """Its first request finds the permit run out at the last moment (a starved SDK)."""

    def complete(self, request: ModelRequest) -> ModelResponse:
        if self.calls == 0 and not self.sent_at:
            self.sent_at.append(-1.0)
            raise PermitExpired("the rate-limit permit ran out before the request was sent")
        return super().complete(request)


def test_a_request_stopped_at_the_last_moment_is_returned_unused_and_asked_again() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs), LateOnce()
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100), max_retries=0)
    assert provider.complete(request()).text == "ok"
    ours.close()
    desk.thread.join(2)
    done = [m for m in desk.got if isinstance(m, CallDone)]
    asks = [m for m in desk.got if isinstance(m, AcquireTokens)]
    assert [d.status for d in done] == ["expired", "ok"] and len(asks) == 2
    assert model.calls == 1


def test_a_grant_that_came_ahead_of_its_start_holds_the_call_until_then() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs, ahead=0.2), Model()
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100))
    asked = time.monotonic()
    provider.complete(request())
    assert model.sent_at[0] >= desk.starts[0] > asked
    # The round trip ends when the grant is usable: the hold until its start is queueing.
    rtt = provider.permits.last_rtt
    # The hold until the start is not in it: less than the time to the send, less the hold.
    assert rtt is not None and 0 <= rtt <= model.sent_at[0] - asked - desk.ahead


class Hooked(Model):
    """A provider with the SDK providers' request hook, which it calls as httpx would."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = SendGate()

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.gate.send_by = request.send_by
        self.gate(None)
        return super().complete(request)


def test_the_request_hook_tells_the_coordinator_when_the_call_went_out() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs), Hooked()
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100))
    provider.complete(request())
    provider.complete(request())
    ours.close()
    desk.thread.join(2)
    kinds = [(type(m).__name__, m.request_id) for m in desk.got]
    assert kinds == [("AcquireTokens", 1), ("CallSent", 1), ("CallDone", 1),
                     ("AcquireTokens", 2), ("CallSent", 2), ("CallDone", 2)]  # fmt: skip
    sent = [m for m in desk.got if isinstance(m, CallSent)]
    assert [m.permit_id for m in sent] == [1, 2]
    assert sent[0].at <= model.sent_at[0]  # stamped in the hook, before the model answered


def test_a_grant_that_lowers_max_tokens_to_fit_the_budget_sends_the_call_with_it() -> None:
    ours, theirs = Pipe()
    model = Model()
    Desk(theirs, max_output=300)
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100))
    big = request()
    big.max_tokens = 4000
    provider.complete(big)
    assert model.max_tokens == 300
    provider.complete(request())  # asks for 8, fewer than the grant's 300: as asked
    assert model.max_tokens == 300


def test_the_budget_reserves_the_input_estimate_with_a_margin_and_the_providers_overhead() -> None:
    text = "def f(x):\n    return x * 2  # a line of code\n" * 200
    req = ModelRequest("be brief", [{"role": "user", "content": text}], [], 8, "m", "t", 1)
    likely, upper = estimate(req)
    assert likely == estimate_input_tokens(req)
    assert upper == math.ceil(likely * RESERVE_MARGIN) + PROVIDER_OVERHEAD
    assert upper < len(text.encode())  # not a byte per token any more


class Counting(Model):
    """A provider that counts input itself: ``counts`` answered in turn (an exception
    is raised), then None (it does not count any more)."""

    def __init__(self, *counts: int | Exception) -> None:
        super().__init__()
        self.counts = list(counts)
        self.counted = 0

    def count_input_tokens(self, request: ModelRequest) -> int | None:
        self.counted += 1
        if not self.counts:
            return None
        count = self.counts.pop(0)
        if isinstance(count, Exception):
            raise count
        return count


def asks_of(provider: MeteredProvider, ours: Connection, desk: Desk) -> list[AcquireTokens]:
    ours.close()
    desk.thread.join(2)
    return [m for m in desk.got if isinstance(m, AcquireTokens)]


def test_a_provider_that_counts_has_its_count_reserved_with_a_small_margin() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs), Counting(50_000, 7)
    provider = MeteredProvider(model, PermitClient("w1", ours), estimate)
    provider.complete(request())
    provider.complete(request())
    first, second = asks_of(provider, ours, desk)
    assert (first.input_tokens, first.worst_case_input) == (50_000, 51_016)
    assert (second.input_tokens, second.worst_case_input) == (7, 24)
    assert first.worst_case_input == math.ceil(50_000 * COUNT_MARGIN) + COUNT_SLACK
    assert first.worst_case_input > estimate(request())[1]  # the estimate would have fallen short


def test_a_count_that_fails_or_is_not_given_falls_back_to_the_estimate() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs), Counting(ProviderError("anthropic: API error 500"))
    provider = MeteredProvider(model, PermitClient("w1", ours), lambda r: (10, 100))
    assert provider.complete(request()).text == "ok"  # the count failed
    assert provider.complete(request()).text == "ok"  # the provider counts no more
    asks = asks_of(provider, ours, desk)
    assert [(a.input_tokens, a.worst_case_input) for a in asks] == [(10, 100), (10, 100)]
    assert model.counted == 2 and model.calls == 2


class FailsFirst(Counting):
    def complete(self, request: ModelRequest) -> ModelResponse:
        if self.calls == 0:
            self.calls += 1
            raise RetryableError("anthropic: API error 500", status=500)
        return super().complete(request)


def test_a_call_is_counted_once_however_often_it_is_retried() -> None:
    ours, theirs = Pipe()
    desk, model = Desk(theirs), FailsFirst(900, 5)
    provider = MeteredProvider(model, PermitClient("w1", ours), estimate, sleep=lambda s: None)
    provider.complete(request())
    asks = asks_of(provider, ours, desk)
    assert [a.input_tokens for a in asks] == [900, 900]
    assert model.counted == 1


def test_a_stop_withdraws_the_ask_and_a_late_grant_for_it_is_skipped() -> None:
    ours, theirs = Pipe()
    desk = Desk(theirs, silent=1)
    client = PermitClient("w1", ours)
    stop = threading.Event()
    threading.Timer(0.15, stop.set).start()
    with pytest.raises(AttemptEnded, match="aborted while waiting"):
        client.acquire(ASK, stop.is_set)
    deadline = time.monotonic() + 5
    while len(desk.got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [type(m).__name__ for m in desk.got] == ["AcquireTokens", "CallDone"]
    assert desk.got[1].status == "withdrawn"
    desk.answer(1)  # the grant the withdrawal crossed on the way
    assert client.acquire(ASK, lambda: False) == (2, 2)


def test_a_coordinator_that_is_gone_ends_the_attempt() -> None:
    ours, theirs = Pipe()
    theirs.close()
    with pytest.raises(AttemptEnded, match="coordinator is gone"):
        PermitClient("w1", ours).acquire(ASK, lambda: False)
