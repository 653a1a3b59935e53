"""Everything the coordinator decides about model calls: permits, spend, and halting.

It answers the permit protocol through the run's one ``PermitDesk``, records usage as
events, and knows when no new work may start: the budget is spent (reserved ahead for
API calls, reported afterwards by agent CLIs), or the provider refused pd for good.

Two threads use it: the permit thread (``PermitLoop``: asks, settlements, grants) and
the coordinator's main loop (halting, the snapshot, agent CLIs' reports). One lock
keeps the desk whole; ``record`` must be safe to call from either thread, and what it
records is durable by the end of the main loop's step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from orchestrator.limits.ledger import PriceTable
from orchestrator.limits.permitdesk import PermitDesk, make_desk
from orchestrator.record import events as ev
from orchestrator.spec.mission import Mission
from orchestrator.wire.messages import AcquireTokens, CallDone, CallSent, Message, UsageReport

Record = Callable[[ev.Event], None]  # records an event (durable by the step's end)
Answers = list[tuple[str, Message]]  # (worker id, Grant or Deny) to send


class Metering:
    def __init__(self, desk: PermitDesk | None, budget: Decimal | None, record: Record) -> None:
        self.desk = desk
        self.budget = budget
        self.emit = record
        self.halt_reason: str | None = None
        self.external_spent = Decimal(0)  # reported by command agents after their runs
        self.lock = threading.Lock()
        self._told_exhausted = False

    @classmethod
    def for_run(
        cls,
        mission: Mission,
        provider: str,
        prices: PriceTable | None,
        events: Iterable[ev.Event],
        record: Record,
    ) -> Metering:
        desk = make_desk(mission, provider, prices)
        if desk is not None:
            desk.replay(events)  # a resumed run keeps what it already spent
        return cls(desk, mission.budget, record)

    def halted(self) -> str | None:
        """Why no new work may start: the budget is spent, or the provider refused us."""
        with self.lock:
            exhausted = self.desk.exhausted if self.desk is not None else None
            return exhausted or self.halt_reason

    def handle(self, worker_id: str, role: str, message: Message) -> Answers:
        """One message of the permit protocol (or an agent CLI's report); the answers."""
        now = time.monotonic()
        with self.lock:
            if isinstance(message, UsageReport):
                self._reported(worker_id, role, message)
            elif self.desk is None:
                pass
            elif isinstance(message, AcquireTokens):
                answer = self.desk.ask(message, role, now)
                self._tell_exhausted()
                return [] if answer is None else [(worker_id, answer)]
            elif isinstance(message, CallSent):
                self.desk.sent(message, now)
            elif isinstance(message, CallDone):
                self._done(worker_id, message, now)
                self._tell_exhausted()
            return []

    def pump(self) -> Answers:
        """What the limiter (and the budget, for calls waiting for money) now allows."""
        if self.desk is None:
            return []
        with self.lock:
            return self.desk.pump(time.monotonic())

    def next_wake(self) -> float | None:
        if self.desk is None:
            return None
        with self.lock:
            return self.desk.next_wake()

    def worker_lost(self, worker_id: str) -> None:
        """A worker died: its calls in flight are charged at their reservations."""
        if self.desk is not None:
            with self.lock:
                for lost in self.desk.worker_lost(worker_id, time.monotonic()):
                    self.emit(lost)
                self._tell_exhausted()

    def _tell_exhausted(self) -> None:
        assert self.desk is not None
        if self.desk.exhausted and not self._told_exhausted:
            self._told_exhausted = True
            self.emit(ev.BudgetExhausted(reason=self.desk.exhausted))

    def view(self) -> dict[str, Any] | None:
        if self.desk is None:
            return None
        with self.lock:
            return self.desk.view()

    def _done(self, worker_id: str, message: CallDone, now: float) -> None:
        assert self.desk is not None
        usage = self.desk.done(message, now)
        if usage is not None:
            self.emit(usage)
            if usage.overrun is not None:
                self.emit(ev.BudgetOverrun(worker=worker_id, task=usage.task, amount=usage.overrun))
        elif message.halt and not self.halt_reason:
            self.halt_reason = message.error
            self.emit(ev.RunHalting(reason=message.error))
        elif message.status in ("retry", "fatal"):
            self.emit(
                ev.CallFailed(
                    worker=worker_id,
                    status=message.status,
                    error=message.error,
                    retry_after=message.retry_after,
                )
            )

    def _reported(self, worker_id: str, role: str, report: UsageReport) -> None:
        """Agent CLIs report cost only after a run, so pd cannot reserve ahead: it stops
        starting new work once the reported spend reaches the budget."""
        self.emit(
            ev.UsageRecorded(
                worker=worker_id,
                task=report.task_id,
                role=role,
                model=report.model,
                usage=report.usage,
                cost=report.cost_usd,
            )
        )
        if report.cost_usd is not None:
            self.external_spent += Decimal(report.cost_usd)
        spent_all = self.budget is not None and self.external_spent >= self.budget
        if spent_all and not self.halt_reason:
            self.halt_reason = (
                f"budget exhausted: agents reported ${self.external_spent} of ${self.budget}"
            )
            self.emit(ev.BudgetExhausted(reason=self.halt_reason))
