"""The coordinator's permit desk: FIFO grants, budget denials, settlement, replay."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from orchestrator.limits.bucket import BucketLimits
from orchestrator.limits.headers import parse_ratelimit_headers
from orchestrator.limits.ledger import CostLedger, PriceTable, cost, worst_case
from orchestrator.limits.permitdesk import GRANT_AHEAD, MIN_OUTPUT, OVERRUN_MARGIN, PermitDesk
from orchestrator.limits.ratelimit import RateLimiter
from orchestrator.providers.base import Usage
from orchestrator.record import events as ev
from orchestrator.wire.messages import AcquireTokens, CallDone, CallSent, Deny, Grant

MODEL = "claude-haiku-4-5"


def ask(
    request_id: int, worker: str = "w1", tokens: int = 100, max_output: int = 50
) -> AcquireTokens:
    return AcquireTokens(
        worker_id=worker,
        request_id=request_id,
        task_id="t",
        provider="anthropic",
        model=MODEL,
        input_tokens=tokens,
        max_output=max_output,
        worst_case_input=tokens * 3,
    )


def ok(grant: Grant, usage: Usage, worker: str = "w1") -> CallDone:
    return CallDone(
        worker_id=worker,
        request_id=grant.request_id,
        permit_id=grant.permit_id,
        status="ok",
        usage=usage.to_dict(),
    )


def desk(requests: int | None = None, budget: str | None = None) -> PermitDesk:
    limits = {"anthropic": BucketLimits(requests=requests, window=10.0)} if requests else {}
    ledger = CostLedger(PriceTable.load(), None if budget is None else Decimal(budget))
    return PermitDesk(RateLimiter(limits, margin=0.0), ledger)


def test_requests_of_one_key_are_granted_in_arrival_order() -> None:
    d = desk(requests=1)
    assert isinstance(d.ask(ask(1), "dev", now=0.0), Grant)
    assert d.ask(ask(2, tokens=10), "dev", now=0.1) is None
    assert d.ask(ask(3, tokens=1), "dev", now=0.2) is None  # smaller, still waits its turn
    assert d.next_wake() is not None and d.next_wake() >= 10.0 - GRANT_AHEAD
    granted = d.pump(now=10.5)
    assert [(w, a.request_id) for w, a in granted] == [("w1", 2)]
    assert isinstance(granted[0][1], Grant) and granted[0][1].queued > 10.0


def test_a_queued_call_is_granted_ahead_to_start_when_the_limiter_allows() -> None:
    d = desk(requests=1)
    first = d.ask(ask(1), "dev", now=0.0)
    assert isinstance(first, Grant) and first.not_before == 0.0 and first.queued == 0.0
    assert d.ask(ask(2), "dev", now=1.0) is None
    wake = d.next_wake()
    assert wake is not None
    assert d.pump(now=wake - 0.001) == []  # not yet within the lead
    [(worker, grant)] = d.pump(now=wake + GRANT_AHEAD / 2)
    # It starts when the window lets it (the first grant's window ends at 10 s), not at
    # the pump's time, and its wait in the queue runs to that start.
    assert worker == "w1" and isinstance(grant, Grant)
    assert grant.not_before == pytest.approx(10.0) and grant.queued == pytest.approx(9.0)
    assert grant.not_before > wake + GRANT_AHEAD / 2
    # Booked at its start: an ask a moment later (before that start) waits a whole window.
    assert d.ask(ask(3), "dev", now=wake + GRANT_AHEAD / 2) is None
    assert d.next_wake() == pytest.approx(20.0 - GRANT_AHEAD)


def test_budget_denies_before_any_call_and_says_why() -> None:
    d = desk(budget="0.0001")
    answer = d.ask(ask(1, tokens=1000), "dev", now=0.0)
    assert isinstance(answer, Deny) and answer.budget
    assert d.exhausted and "budget exhausted" in d.exhausted
    assert d.ledger.reserved == 0


def test_settling_records_the_real_cost_and_frees_the_reservation() -> None:
    d = desk(budget="1")
    grant = d.ask(ask(1), "dev", now=0.0)
    usage = Usage(input_tokens=90, output_tokens=20, cache_read_tokens=5)
    data = d.done(
        CallDone(
            worker_id="w1",
            request_id=1,
            permit_id=grant.permit_id,
            status="ok",
            usage=usage.to_dict(),
        ),
        now=1.0,
    )
    expected = cost(usage, PriceTable.load().price(MODEL))
    assert data is not None and Decimal(data.cost or "") == expected == d.ledger.spent
    assert d.ledger.reserved == 0 and data.overrun is None


def test_a_dead_workers_call_in_flight_is_charged_its_reservation_and_its_queued_ask_freed() -> (
    None
):
    d = desk(requests=1, budget="1")
    d.ask(ask(1, worker="w1"), "dev", now=0.0)
    held = d.ledger.reserved
    d.ask(ask(2, worker="w1"), "dev", now=0.0)  # queued
    assert d.ledger.reserved == 2 * held > 0
    [lost] = d.worker_lost("w1", now=0.5)
    assert d.ledger.reserved == 0 and d.next_wake() is None
    assert d.ledger.spent == held and d.ledger.totals()["lost"] == 1
    assert lost.lost is True and Decimal(lost.cost or "") == held and lost.task == "t"
    # pd resume counts the charge again from the event
    again = desk(budget="1")
    again.replay([lost])
    assert again.ledger.spent == held and again.ledger.totals()["lost"] == 1


# haiku: input $1, cache writes $1.25 (the worst case's input price), output $5 per million
def haiku_worst(input_tokens: int, output: int) -> Decimal:
    return worst_case(PriceTable.load().price(MODEL), input_tokens, output)


def test_a_call_the_rest_of_the_budget_cannot_cover_waits_for_the_calls_in_flight() -> None:
    # Room for one call's worst case (300 input, 1000 output) and a half.
    d = desk(budget=str(haiku_worst(300, 1000) * 3 / 2))
    first = d.ask(ask(1, max_output=1000), "dev", now=0.0)
    assert isinstance(first, Grant)
    assert d.ask(ask(2, worker="w2", max_output=1000), "dev", now=0.1) is None  # waits
    assert d.ask(ask(3, worker="w3", max_output=10), "dev", now=0.1) is None  # behind it
    assert d.exhausted is None and d.view()["waiting_for_budget"] == 2
    d.done(ok(first, Usage(100, 20)), now=1.0)  # cost far less than reserved
    granted = d.pump(now=1.0)
    assert [(w, a.request_id) for w, a in granted] == [("w2", 2), ("w3", 3)]
    assert all(isinstance(a, Grant) and a.max_output == 0 for _, a in granted)  # as asked
    assert d.ledger.spent + d.ledger.reserved <= d.ledger.budget


def test_with_nothing_in_flight_to_free_money_max_tokens_is_lowered_to_what_is_left() -> None:
    budget = haiku_worst(300, 400)
    d = desk(budget=str(budget))
    grant = d.ask(ask(1, max_output=4000), "dev", now=0.0)
    assert isinstance(grant, Grant) and grant.max_output == 400
    assert d.ledger.reserved == budget and d.exhausted is None
    d.done(ok(grant, Usage(300, 400)), now=1.0)
    assert d.ledger.spent <= budget
    # Now under MIN_OUTPUT tokens would fit: the budget is spent, the run stops.
    denied = d.ask(ask(2, max_output=4000), "dev", now=2.0)
    assert isinstance(denied, Deny) and denied.budget and d.exhausted


def test_a_waiting_call_is_lowered_or_denied_once_the_calls_in_flight_have_settled() -> None:
    budget = haiku_worst(300, 1000) + haiku_worst(300, MIN_OUTPUT)
    d = desk(budget=str(budget))
    first = d.ask(ask(1, max_output=1000), "dev", now=0.0)
    assert d.ask(ask(2, worker="w2", max_output=1000), "dev", now=0.0) is None
    d.done(ok(first, Usage(300, 1000)), now=1.0)  # cost all of its reservation
    [(worker, grant)] = d.pump(now=1.0)
    assert worker == "w2" and isinstance(grant, Grant)
    assert MIN_OUTPUT <= grant.max_output < 1000
    assert d.ledger.spent + d.ledger.reserved <= budget


def test_more_input_than_reserved_makes_the_models_next_reservations_larger() -> None:
    d = desk(budget="1")
    grant = d.ask(ask(1, tokens=100), "dev", now=0.0)  # 300 input tokens reserved
    data = d.done(ok(grant, Usage(1200, 50)), now=1.0)  # the provider counted 1200
    assert data is not None and Decimal(data.overrun or "") > 0
    d.ask(ask(2, tokens=100), "dev", now=2.0)
    # 1200 / 300 with OVERRUN_MARGIN on top
    assert d.ledger.reserved == haiku_worst(math.ceil(300 * 4 * OVERRUN_MARGIN), 50)


def test_withdrawn_request_leaves_the_queue() -> None:
    d = desk(requests=1, budget="1")
    d.ask(ask(1), "dev", now=0.0)
    d.ask(ask(2), "dev", now=0.0)
    d.done(CallDone(worker_id="w1", request_id=2, permit_id=-1, status="withdrawn"), now=0.1)
    assert d.pump(now=20.0) == []


def test_resume_replays_recorded_spend_into_the_ledger() -> None:
    d = desk(budget="1")
    usage = Usage(input_tokens=1000, output_tokens=500)
    events = [
        ev.UsageRecorded(
            worker="w1", role="dev", task="t", model=MODEL, usage=usage.to_dict(), cost="x"
        ),
        ev.TaskMerged(task="t", attempt=1, head="h"),
    ]
    d.replay(events)
    assert d.ledger.spent == cost(usage, PriceTable.load().price(MODEL)) > 0


def test_rate_limit_headers_of_both_providers() -> None:
    remaining, resets = parse_ratelimit_headers(
        {
            "anthropic-ratelimit-requests-remaining": "7",
            "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:30Z",
            "anthropic-ratelimit-output-tokens-remaining": "900",
        },
        wall_now=1767225600.0,  # 2026-01-01T00:00:00Z
    )
    assert remaining == {"requests": 7, "output_tokens": 900}
    assert abs(resets["requests"] - 30.0) < 1e-6
    remaining, resets = parse_ratelimit_headers(
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "6m0s"}, 0.0
    )
    assert remaining == {"requests": 3} and resets == {"requests": 360.0}


def test_a_refund_lets_a_queued_call_go_at_once() -> None:
    limits = {"anthropic": BucketLimits(output_tokens=1000, window=3.0)}
    d = PermitDesk(RateLimiter(limits, margin=0.0), None)
    big = AcquireTokens(
        worker_id="w1",
        request_id=1,
        task_id="t",
        provider="anthropic",
        model=MODEL,
        input_tokens=10,
        max_output=600,
    )
    first = d.ask(big, "dev", now=0.0)
    second = AcquireTokens(**{**big.__dict__, "request_id": 2, "worker_id": "w2"})
    assert d.ask(second, "dev", now=0.001) is None  # 600 + 600 > 1000 until A settles
    d.done(
        CallDone(
            worker_id="w1",
            request_id=1,
            permit_id=first.permit_id,
            status="ok",
            usage=Usage(input_tokens=10, output_tokens=100).to_dict(),
        ),
        now=0.01,
    )
    granted = d.pump(now=0.02)
    assert [(w, a.request_id) for w, a in granted] == [("w2", 2)]


def test_a_call_counts_from_when_it_was_sent_and_its_queue_waits_for_that() -> None:
    limits = {"anthropic": BucketLimits(requests=1, window=10.0)}
    d = PermitDesk(RateLimiter(limits, margin=0.0, until_sent=True), None)
    first = d.ask(ask(1), "dev", now=0.0)
    assert isinstance(first, Grant) and first.send_by == 0.0  # no deadline to miss
    assert d.ask(ask(2, worker="w2"), "dev", now=0.1) is None
    assert d.next_wake() is None  # nothing to time until the first call is sent
    d.sent(CallSent("w1", 1, first.permit_id, at=2.5), now=2.6)  # it went out late
    assert d.next_wake() == pytest.approx(-GRANT_AHEAD)  # looked at again at once ...
    assert d.pump(now=2.6) == []
    assert d.next_wake() == pytest.approx(12.5 - GRANT_AHEAD)  # ... and it frees at 12.5


def test_a_429_pauses_every_worker_of_the_provider_until_retry_after() -> None:
    d = desk()
    first = d.ask(ask(1, worker="w1"), "dev", now=0.0)
    assert isinstance(first, Grant)
    limited = CallDone(
        worker_id="w1",
        request_id=1,
        permit_id=first.permit_id,
        status="rate_limited",
        retry_after=5.0,
    )
    d.done(limited, now=1.0)
    assert d.ask(ask(2, worker="w2"), "dev", now=2.0) is None  # another worker waits too
    assert d.pump(now=5.5) == []
    [(worker, grant)] = d.pump(now=6.0 + GRANT_AHEAD)
    assert worker == "w2" and isinstance(grant, Grant) and grant.not_before >= 6.0


def test_a_call_no_window_can_hold_is_denied_with_what_to_do_and_its_money_freed() -> None:
    limits = {"anthropic": BucketLimits(input_tokens=1000, window=10.0)}
    ledger = CostLedger(PriceTable.load(), Decimal("1"))
    d = PermitDesk(RateLimiter(limits, margin=0.0), ledger)
    denied = d.ask(ask(1, tokens=5000), "dev", now=0.0)
    assert isinstance(denied, Deny) and not denied.budget
    assert "5000 input tokens can never fit rate limit 'anthropic'" in denied.reason
    assert "lower max_tokens or shorten the prompt" in denied.reason
    assert ledger.reserved == 0 and isinstance(d.ask(ask(2), "dev", now=0.0), Grant)
