"""The coordinator's permit desk: FIFO grants, budget denials, settlement, replay."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orchestrator.ledger import CostLedger, PriceTable, cost
from orchestrator.messages import AcquireTokens, CallDone, Deny, Grant
from orchestrator.permitdesk import GRANT_AHEAD, PermitDesk, parse_ratelimit_headers
from orchestrator.providers.base import Usage
from orchestrator.ratelimit import BucketLimits, RateLimiter

MODEL = "claude-haiku-4-5"


def ask(request_id: int, worker: str = "w1", tokens: int = 100) -> AcquireTokens:
    return AcquireTokens(
        worker_id=worker,
        request_id=request_id,
        task_id="t",
        provider="anthropic",
        model=MODEL,
        input_tokens=tokens,
        max_output=50,
        worst_case_input=tokens * 3,
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
    assert Decimal(data["cost"]) == expected == d.ledger.spent
    assert d.ledger.reserved == 0 and "overrun" not in data


def test_a_dead_workers_calls_free_their_money_and_leave_the_queue() -> None:
    d = desk(requests=1, budget="1")
    d.ask(ask(1, worker="w1"), "dev", now=0.0)
    d.ask(ask(2, worker="w1"), "dev", now=0.0)  # queued
    assert d.ledger.reserved > 0
    d.worker_lost("w1", now=0.5)
    assert d.ledger.reserved == 0 and d.next_wake() is None


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
        {
            "kind": "usage",
            "worker": "w1",
            "role": "dev",
            "task": "t",
            "model": MODEL,
            "usage": usage.to_dict(),
            "cost": "x",
        },
        {"kind": "task_merged", "task": "t"},
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
