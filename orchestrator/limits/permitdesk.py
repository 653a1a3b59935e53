"""The coordinator's side of the permit protocol: one limiter, one ledger, every call.

A request first reserves its worst-case cost in the ledger (no reservation, no call:
spend can never pass the budget), then waits for a rate-limit permit. Requests under one
limiter key are granted strictly in arrival order, so a large call is never starved by a
stream of small ones. Afterwards the real usage settles both.

When the rest of the budget cannot cover a call's worst case, the call waits for the
calls in flight to settle (they usually cost far less than reserved), and once none is
left that could free money, it goes with ``max_tokens`` lowered to what the budget still
covers; only below ``MIN_OUTPUT`` is it refused and the run's budget spent. A call whose
input came out larger than reserved makes later reservations of its model larger by the
same ratio, so an estimate that fell short once is not trusted again.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from orchestrator.limits.bucket import BucketLimits, NeverFits
from orchestrator.limits.headers import parse_ratelimit_headers
from orchestrator.limits.ledger import (
    CostLedger,
    ModelPrice,
    PriceTable,
    Reservation,
    worst_case,
)
from orchestrator.limits.ratelimit import Permit, RateLimiter
from orchestrator.providers.base import Usage
from orchestrator.record import events as ev
from orchestrator.wire.messages import AcquireTokens, CallDone, CallSent, Deny, Grant, Message

if TYPE_CHECKING:
    from orchestrator.spec.mission import Mission


NOT_SENT = ("withdrawn", "expired")  # the call never reached the provider
# Queued calls are granted up to this long before their time, the grant saying when the
# call may go: the grant reaches the worker while the limiter's wait runs out, so the
# coordinator-to-worker hop is off the call's path. The limiter books the permit at its
# start time, so its windows hold as for any grant; a refund arriving inside this lead
# cannot pull the call earlier, which costs at most this much of the wait.
GRANT_AHEAD = 0.005
# A call is never sent with a smaller max_tokens than this to squeeze into the budget:
# an answer cut that short is seldom worth its input.
MIN_OUTPUT = 256
# Room above the largest input overrun seen, for the next reservations of that model.
OVERRUN_MARGIN = 1.1


@dataclass
class _Call:
    ask: AcquireTokens
    role: str
    reservation: Reservation | None = None
    permit: Permit | None = None
    wake: float = 0.0
    asked: float = 0.0
    key: str = field(init=False)  # the limiter key, "provider/model"
    max_output: int = field(init=False)  # the ask's, or lower to fit the budget
    input_reserved: int = 0  # input tokens the reservation covers

    def __post_init__(self) -> None:
        self.key = f"{self.ask.provider}/{self.ask.model}"
        self.max_output = self.ask.max_output


@dataclass
class PermitDesk:
    limiter: RateLimiter
    ledger: CostLedger | None
    exhausted: str | None = None  # why the budget stopped the run, once it has
    # Queued calls, one FIFO per limiter key: only each queue's head is ever looked at.
    _waiting: dict[str, deque[_Call]] = field(default_factory=dict)
    _granted: dict[tuple[str, int], _Call] = field(default_factory=dict)
    # Calls waiting for money (in arrival order): in-flight calls may settle for less.
    _unfunded: deque[_Call] = field(default_factory=deque)
    _answers: list[tuple[str, Message]] = field(default_factory=list)  # for the next pump
    _input_scale: dict[str, float] = field(default_factory=dict)  # model -> overrun ratio

    def ask(self, ask: AcquireTokens, role: str, now: float) -> Message | None:
        """Grant or deny at once, or queue (None) until ``pump`` can grant it."""
        call = _Call(ask, role, asked=now)
        if self._unfunded:
            self._unfunded.append(call)  # behind earlier calls waiting for money
            return None
        funded = self._fund(call)
        if funded is False:
            self._unfunded.append(call)
            return None
        if funded is not True:
            return funded
        return self._queue_or_try(call, now)

    def pump(self, now: float) -> list[tuple[str, Message]]:
        """Grant what is grantable within ``GRANT_AHEAD`` of ``now``, oldest first within
        each key; each grant starts at the time the limiter allows it."""
        out, self._answers = self._answers, []
        for key, queue in list(self._waiting.items()):
            while queue and queue[0].wake <= now + GRANT_AHEAD:
                answer = self._try(queue[0], max(now, queue[0].wake), queue=False)
                if answer is None:
                    break
                out.append((queue.popleft().ask.worker_id, answer))
            if not queue:
                del self._waiting[key]
        return out

    def _queue_or_try(self, call: _Call, now: float) -> Message | None:
        queue = self._waiting.get(call.key)
        if queue:
            queue.append(call)  # behind earlier requests of the same key
            return None
        return self._try(call, now, queue=True)

    def _fund(self, call: _Call) -> Deny | bool:
        """Reserve the call's worst case: True when reserved, False when it must wait for
        in-flight calls to settle, a Deny when the budget cannot cover it any more."""
        if self.ledger is None:
            return True
        ask, ledger = call.ask, self.ledger
        price = ledger.prices.price(ask.model)
        scale = self._input_scale.get(ask.model, 1.0)
        call.input_reserved = math.ceil(ask.worst_case_input * scale)
        amount = worst_case(price, call.input_reserved, ask.max_output)
        reservation = ledger.reserve(ask.worker_id, call.role, ask.task_id, ask.model, amount)
        if reservation is None and ledger.could_free(ask.worker_id, amount):
            return False
        if reservation is None:
            room = ledger.room(ask.worker_id) or Decimal(0)
            output = fitting_output(price, call.input_reserved, room, ask.max_output)
            if output >= min(MIN_OUTPUT, ask.max_output):
                amount = worst_case(price, call.input_reserved, output)
                reservation = ledger.reserve(
                    ask.worker_id, call.role, ask.task_id, ask.model, amount
                )
                call.max_output = output
        if reservation is None:
            self.exhausted = self.exhausted or self._budget_text(amount)
            return Deny(request_id=ask.request_id, reason=self.exhausted, budget=True)
        call.reservation = reservation
        return True

    def _fund_waiting(self, now: float) -> None:
        """Money was freed: reserve for the calls waiting for it, oldest first."""
        while self._unfunded:
            call = self._unfunded[0]
            funded = self._fund(call)
            if funded is False:
                return
            self._unfunded.popleft()
            answer = self._queue_or_try(call, now) if funded is True else funded
            if answer is not None:
                self._answers.append((call.ask.worker_id, answer))

    def next_wake(self) -> float | None:
        """When the loop must look again: ``GRANT_AHEAD`` before the earliest head of a
        key's queue may go (the calls behind a head wait for it, whatever their sizes)."""
        if self._answers:
            return 0.0
        # A head waiting for a call to be sent (inf) is looked at again when it is.
        heads = [q[0].wake for q in self._waiting.values() if q[0].wake != math.inf]
        return min(heads) - GRANT_AHEAD if heads else None

    def sent(self, msg: CallSent, now: float) -> None:
        """A granted call went on the wire: the limiter counts it from then."""
        call = self._granted.get((msg.worker_id, msg.request_id))
        if call is not None and call.permit is not None:
            self.limiter.sent(call.permit.id, msg.at, now)
            self._recheck()

    def done(self, msg: CallDone, now: float) -> ev.UsageRecorded | None:
        """Settle a call; returns the usage event's data for a call that was made.

        Settling refunds what the call did not use, so the queued calls get looked at
        again at the next ``pump`` instead of at the wake time computed before.
        """
        self._recheck()
        call = self._granted.pop((msg.worker_id, msg.request_id), None)
        if call is None:
            self._withdraw(msg.worker_id, msg.request_id)
            self._fund_waiting(now)
            return None
        assert call.permit is not None
        data = None
        if msg.status == "ok":
            data = self._settle(call, msg, now)
        else:
            self.limiter.cancel(call.permit.id, now, sent=msg.status not in NOT_SENT)
            self._release(call)
            if msg.retry_after is not None:  # rate limited: everyone waits, not just this one
                self.limiter.pause(call.ask.provider, now + msg.retry_after)
        self._fund_waiting(now)
        return data

    def _settle(self, call: _Call, msg: CallDone, now: float) -> ev.UsageRecorded:
        assert call.permit is not None
        usage = Usage.from_dict(msg.usage)
        self.limiter.settle_usage(call.permit.id, usage, now)
        cost = self.ledger.settle(call.reservation, usage) if call.reservation else None
        self._calibrate(call.key, msg.headers, now)
        overrun = None
        if cost is not None and call.reservation and cost > call.reservation.amount:
            overrun = format(cost - call.reservation.amount, "f")
        data = ev.UsageRecorded(
            worker=msg.worker_id,
            task=call.ask.task_id,
            role=call.role,
            model=call.ask.model,
            usage=usage.to_dict(),
            cost=None if cost is None else format(cost, "f"),
            permit_rtt=msg.permit_rtt,
            overrun=overrun,
        )
        prompt = usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens
        if call.reservation is not None and prompt > call.input_reserved > 0:
            # The estimate fell short: reserve this model's next calls larger, with room.
            ratio = prompt / call.input_reserved * OVERRUN_MARGIN
            scale = self._input_scale.get(call.ask.model, 1.0)
            self._input_scale[call.ask.model] = max(scale * ratio, scale)
        return data

    def worker_lost(self, worker_id: str, now: float) -> list[ev.UsageRecorded]:
        """A dead worker's calls: keep counting their permits, and charge each call in
        flight its whole reservation (it may have reached the provider, which bills it
        whether or not anyone reads the answer). Returns the lost calls' usage events."""
        self._recheck()
        lost = []
        for (wid, request_id), call in list(self._granted.items()):
            if wid == worker_id and call.permit is not None:
                del self._granted[(wid, request_id)]
                # The call may have reached the provider: keep counting what it may have
                # used, so no window overshoots because a worker died mid-call.
                self.limiter.settle(call.permit.id, call.input_reserved, call.max_output, now)
                if call.reservation is not None and self.ledger is not None:
                    charged = self.ledger.lost(call.reservation)
                    lost.append(self._lost_event(call, charged))
        self._unqueue(lambda call: call.ask.worker_id == worker_id)
        self._fund_waiting(now)
        return lost

    def _lost_event(self, call: _Call, charged: Decimal) -> ev.UsageRecorded:
        return ev.UsageRecorded(
            worker=call.ask.worker_id,
            task=call.ask.task_id,
            role=call.role,
            model=call.ask.model,
            cost=format(charged, "f"),
            lost=True,
            reserved_input=call.input_reserved,
            max_output=call.max_output,
        )

    def replay(self, events: Iterable[ev.Event]) -> None:
        """Spend recorded before a restart (``pd resume``) still counts against the budget."""
        if self.ledger is None:
            return
        for event in events:
            if not isinstance(event, ev.UsageRecorded) or event.model not in self.ledger.prices:
                continue
            who = (event.worker, event.role, event.task, event.model)
            if event.lost:
                self.ledger.charge(*who, Decimal(event.cost or 0), lost=True)
            else:
                reservation = self.ledger.reserve(*who, Decimal(0))
                if reservation is not None:
                    self.ledger.settle(reservation, Usage.from_dict(event.usage))

    def view(self) -> dict[str, Any]:
        spend = self.ledger.totals() if self.ledger is not None else {}
        return {
            "waiting": sum(map(len, self._waiting.values())),
            "in_flight": len(self._granted),
            "waiting_for_budget": len(self._unfunded),
            "exhausted": self.exhausted,
            **({"spend": spend} if spend else {}),
        }

    # ---- internals ---------------------------------------------------------------

    def _recheck(self) -> None:
        for queue in self._waiting.values():
            queue[0].wake = 0.0  # only heads are looked at

    def _try(self, call: _Call, now: float, queue: bool) -> Message | None:
        try:
            got = self.limiter.acquire(call.key, call.ask.input_tokens, call.max_output, now)
        # NeverFits: larger than a whole window allows. ValueError: a negative count (a
        # worker's bug). Neither is ever grantable.
        except (NeverFits, ValueError) as exc:
            self._release(call)
            return Deny(request_id=call.ask.request_id, reason=str(exc))
        if isinstance(got, Permit):
            call.permit = got
            self._granted[(call.ask.worker_id, call.ask.request_id)] = call
            start = got.granted_at  # the limiter's clock: ``now``, or later if granted ahead
            # No send_by: the limiter counts the call from when it is sent (CallSent), so
            # a call that reaches the wire late is neither refused nor a 429.
            return Grant(
                request_id=call.ask.request_id,
                permit_id=got.id,
                queued=max(0.0, start - call.asked),
                not_before=start,
                max_output=call.max_output if call.max_output < call.ask.max_output else 0,
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
        for call in [c for c in self._unfunded if which(c)]:
            self._unfunded.remove(call)
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


def fitting_output(price: ModelPrice, input_tokens: int, room: Decimal, wanted: int) -> int:
    """The largest ``max_tokens`` (up to ``wanted``) whose worst case fits in ``room``."""
    rate = price.for_prompt(input_tokens).output
    left = room - worst_case(price, input_tokens, 0)
    if left < 0:
        return 0
    return wanted if rate == 0 else min(wanted, int(left / rate))


def make_desk(mission: Mission, provider: str, prices: PriceTable | None) -> PermitDesk | None:
    """The desk for a run whose calls cost money; None for scripted and command runs."""
    if provider not in ("anthropic", "openai") or prices is None:
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
    ledger = CostLedger(prices, mission.budget, mission.worker_budget)
    return PermitDesk(RateLimiter(limits, until_sent=True), ledger)
