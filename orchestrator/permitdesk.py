"""The coordinator's side of the permit protocol: one limiter, one ledger, every call.

A request first reserves its worst-case cost in the ledger (no reservation, no call:
spend can never pass the budget), then waits for a rate-limit permit. Requests under one
limiter key are granted strictly in arrival order, so a large call is never starved by a
stream of small ones. Afterwards the real usage settles both.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orchestrator.ledger import CostLedger, Reservation, worst_case
from orchestrator.messages import AcquireTokens, CallDone, Deny, Grant, Message
from orchestrator.providers.base import Usage
from orchestrator.ratelimit import BucketLimits, Permit, RateLimiter, parse_go_duration

if TYPE_CHECKING:
    from orchestrator.preflight import RunPlan


NOT_SENT = ("withdrawn", "expired")  # the call never reached the provider
# Queued calls are granted up to this long before their time, the grant saying when the
# call may go: the grant reaches the worker while the limiter's wait runs out, so the
# coordinator-to-worker hop is off the call's path. The limiter books the permit at its
# start time, so its windows hold as for any grant; a refund arriving inside this lead
# cannot pull the call earlier, which costs at most this much of the wait.
GRANT_AHEAD = 0.005
# A permit must be used within this share of the limiter's margin; the rest covers the
# SDK building and sending the request after the worker's check.
SEND_SHARE = 0.6


@dataclass
class _Call:
    ask: AcquireTokens
    role: str
    reservation: Reservation | None
    permit: Permit | None = None
    wake: float = 0.0
    asked: float = 0.0
    key: str = field(init=False)  # the limiter key, "provider/model"

    def __post_init__(self) -> None:
        self.key = f"{self.ask.provider}/{self.ask.model}"


@dataclass
class PermitDesk:
    limiter: RateLimiter
    ledger: CostLedger | None
    exhausted: str | None = None  # why the budget stopped the run, once it has
    # Queued calls, one FIFO per limiter key: only each queue's head is ever looked at.
    _waiting: dict[str, deque[_Call]] = field(default_factory=dict)
    _granted: dict[tuple[str, int], _Call] = field(default_factory=dict)

    def ask(self, ask: AcquireTokens, role: str, now: float) -> Message | None:
        """Grant or deny at once, or queue (None) until ``pump`` can grant it."""
        reservation = None
        if self.ledger is not None:
            price = self.ledger.prices.price(ask.model)
            amount = worst_case(price, ask.worst_case_input, ask.max_output)
            reservation = self.ledger.reserve(ask.worker_id, role, ask.task_id, ask.model, amount)
            if reservation is None:
                self.exhausted = self.exhausted or self._budget_text(amount)
                return Deny(request_id=ask.request_id, reason=self.exhausted, budget=True)
        call = _Call(ask, role, reservation, asked=now)
        queue = self._waiting.get(call.key)
        if queue:
            queue.append(call)  # behind earlier requests of the same key
            return None
        return self._try(call, now, queue=True)

    def pump(self, now: float) -> list[tuple[str, Message]]:
        """Grant what is grantable within ``GRANT_AHEAD`` of ``now``, oldest first within
        each key; each grant starts at the time the limiter allows it."""
        out: list[tuple[str, Message]] = []
        for key, queue in list(self._waiting.items()):
            while queue and queue[0].wake <= now + GRANT_AHEAD:
                answer = self._try(queue[0], max(now, queue[0].wake), queue=False)
                if answer is None:
                    break
                out.append((queue.popleft().ask.worker_id, answer))
            if not queue:
                del self._waiting[key]
        return out

    def next_wake(self) -> float | None:
        """When the loop must look again: ``GRANT_AHEAD`` before the earliest head of a
        key's queue may go (the calls behind a head wait for it, whatever their sizes)."""
        heads = [queue[0].wake for queue in self._waiting.values()]
        return min(heads) - GRANT_AHEAD if heads else None

    def done(self, msg: CallDone, now: float) -> dict[str, Any] | None:
        """Settle a call; returns the usage event's data for a call that was made.

        Settling refunds what the call did not use, so the queued calls get looked at
        again at the next ``pump`` instead of at the wake time computed before.
        """
        self._recheck()
        call = self._granted.pop((msg.worker_id, msg.request_id), None)
        if call is None:
            self._withdraw(msg.worker_id, msg.request_id)
            return None
        assert call.permit is not None
        if msg.status == "ok":
            usage = Usage.from_dict(msg.usage)
            self.limiter.settle_usage(call.permit.id, usage, now)
            cost = self.ledger.settle(call.reservation, usage) if call.reservation else None
            self._calibrate(call.key, msg.headers, now)
            data = {
                "worker": msg.worker_id,
                "task": call.ask.task_id,
                "role": call.role,
                "model": call.ask.model,
                "usage": usage.to_dict(),
                "cost": None if cost is None else format(cost, "f"),
                "permit_rtt": msg.permit_rtt,
            }
            if cost is not None and call.reservation and cost > call.reservation.amount:
                data["overrun"] = format(cost - call.reservation.amount, "f")
            return data
        self.limiter.cancel(call.permit.id, now, sent=msg.status not in NOT_SENT)
        if call.reservation is not None:
            self.ledger.release(call.reservation)  # type: ignore[union-attr]
        if msg.retry_after is not None:  # rate limited: everyone waits, not just this one
            self.limiter.pause(call.ask.provider, now + msg.retry_after)
        return None

    def worker_lost(self, worker_id: str, now: float) -> None:
        """A dead worker's calls: keep counting its permits, free its money."""
        self._recheck()
        for (wid, request_id), call in list(self._granted.items()):
            if wid == worker_id and call.permit is not None:
                del self._granted[(wid, request_id)]
                # The call may have reached the provider: keep counting what it may have
                # used, so no window overshoots because a worker died mid-call.
                self.limiter.settle(call.permit.id, call.ask.input_tokens, call.ask.max_output, now)
                self._release(call)
        self._unqueue(lambda call: call.ask.worker_id == worker_id)

    def replay(self, events: Any) -> None:
        """Spend recorded before a restart (``pd resume``) still counts against the budget."""
        if self.ledger is None:
            return
        for event in events:
            if event["kind"] == "usage" and event.get("model") in self.ledger.prices:
                reservation = self.ledger.reserve(
                    event["worker"], event["role"], event["task"], event["model"], Decimal(0)
                )
                if reservation is not None:
                    self.ledger.settle(reservation, Usage.from_dict(event["usage"]))

    def view(self) -> dict[str, Any]:
        spend = self.ledger.totals() if self.ledger is not None else {}
        return {
            "waiting": sum(map(len, self._waiting.values())),
            "in_flight": len(self._granted),
            "exhausted": self.exhausted,
            **({"spend": spend} if spend else {}),
        }

    # ---- internals ---------------------------------------------------------------

    def _recheck(self) -> None:
        for queue in self._waiting.values():
            queue[0].wake = 0.0  # only heads are looked at

    def _try(self, call: _Call, now: float, queue: bool) -> Message | None:
        try:
            got = self.limiter.acquire(call.key, call.ask.input_tokens, call.ask.max_output, now)
        except ValueError as exc:  # larger than a whole window allows: never grantable
            self._release(call)
            return Deny(request_id=call.ask.request_id, reason=str(exc))
        if isinstance(got, Permit):
            call.permit = got
            self._granted[(call.ask.worker_id, call.ask.request_id)] = call
            within = self.limiter.send_within(call.key)
            start = got.granted_at  # the limiter's clock: ``now``, or later if granted ahead
            return Grant(
                request_id=call.ask.request_id,
                permit_id=got.id,
                queued=max(0.0, start - call.asked),
                send_by=0.0 if within is None else start + SEND_SHARE * within,
                not_before=start,
            )
        call.wake = got
        if queue:
            self._waiting.setdefault(call.key, deque()).append(call)
        return None

    def _withdraw(self, worker_id: str, request_id: int) -> None:
        ids = (worker_id, request_id)
        self._unqueue(lambda call: (call.ask.worker_id, call.ask.request_id) == ids)

    def _unqueue(self, which: Callable[[_Call], bool]) -> None:
        """Take the calls ``which`` picks out of the queues and free their money."""
        for key, queue in list(self._waiting.items()):
            for call in [c for c in queue if which(c)]:
                queue.remove(call)
                self._release(call)
            if queue:
                queue[0].wake = 0.0  # a new head: look at it afresh
            else:
                del self._waiting[key]

    def _release(self, call: _Call) -> None:
        if call.reservation is not None and self.ledger is not None:
            self.ledger.release(call.reservation)

    def _budget_text(self, amount: Decimal) -> str:
        assert self.ledger is not None
        return (
            f"budget exhausted: ${self.ledger.spent:.4f} spent of "
            f"${self.ledger.budget}; the next call could cost up to ${amount:.4f}"
        )

    def _calibrate(self, provider: str, headers: dict[str, str], now: float) -> None:
        remaining, resets = parse_ratelimit_headers(headers, time.time())
        if remaining:
            self.limiter.calibrate(provider, remaining, resets, now)


def make_desk(plan: RunPlan) -> PermitDesk | None:
    """The desk for a run whose calls cost money; None for scripted and command runs."""
    mission = plan.mission
    if plan.provider.name not in ("anthropic", "openai") or plan.provider.prices is None:
        return None
    limits = {
        key: BucketLimits(
            requests=config.requests_per_minute,
            input_tokens=config.input_tokens_per_minute,
            output_tokens=config.output_tokens_per_minute,
            window=config.window_seconds,
            count_cache_reads=key.split("/")[0] == "openai",
            smooth=config.smooth,
        )
        for key, config in mission.rate_limits.items()
    }
    ledger = CostLedger(plan.provider.prices, mission.budget, mission.worker_budget)
    return PermitDesk(RateLimiter(limits), ledger)


_ANTHROPIC = {
    "requests": "requests",
    "input-tokens": "input_tokens",
    "output-tokens": "output_tokens",
}


def parse_ratelimit_headers(
    headers: dict[str, str], wall_now: float
) -> tuple[dict[str, int], dict[str, float]]:
    """Remaining counts and seconds to reset, from either provider's header names."""
    remaining: dict[str, int] = {}
    resets: dict[str, float] = {}
    h = {k.lower(): v for k, v in headers.items()}
    for name, dim in _ANTHROPIC.items():
        left = h.get(f"anthropic-ratelimit-{name}-remaining")
        if left is not None and left.isdigit():
            remaining[dim] = int(left)
            reset = h.get(f"anthropic-ratelimit-{name}-reset")
            if reset:
                try:
                    at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
                    resets[dim] = max(0.0, at - wall_now)
                except ValueError:
                    pass
    left = h.get("x-ratelimit-remaining-requests")
    if left is not None and left.isdigit():
        remaining["requests"] = int(left)
        with suppress(ValueError):  # no (or an unreadable) reset: a whole window is assumed
            resets["requests"] = parse_go_duration(h.get("x-ratelimit-reset-requests", ""))
    return remaining, resets
