"""Everything the coordinator decides about model calls: permits, spend, and halting.

It answers the permit protocol through the run's one ``PermitDesk``, records usage as
events, and knows when no new work may start: the budget is spent (reserved ahead for
API calls, reported afterwards by agent CLIs), or the provider refused pd for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from orchestrator.messages import AcquireTokens, CallDone, Message, UsageReport
from orchestrator.permitdesk import make_desk
from orchestrator.preflight import RunPlan

Emit = Callable[..., None]
Send = Callable[[str, Message], Any]


class Metering:
    def __init__(
        self, plan: RunPlan, events: Iterable[dict[str, Any]], emit: Emit, send: Send
    ) -> None:
        self.desk = make_desk(plan)
        if self.desk is not None:
            self.desk.replay(events)  # a resumed run keeps what it already spent
        self.budget = plan.mission.budget
        self.emit = emit
        self.send = send
        self.halt_reason: str | None = None
        self.external_spent = Decimal(0)  # reported by command agents after their runs

    def halted(self) -> str | None:
        """Why no new work may start: the budget is spent, or the provider refused us."""
        exhausted = self.desk.exhausted if self.desk is not None else None
        return exhausted or self.halt_reason

    def handle(self, worker_id: str, role: str, message: Message) -> None:
        now = time.monotonic()
        if isinstance(message, UsageReport):
            self._reported(worker_id, role, message)
        elif self.desk is None:
            return
        elif isinstance(message, AcquireTokens):
            was = self.desk.exhausted
            answer = self.desk.ask(message, role, now)
            if answer is not None:
                self.send(worker_id, answer)
            if self.desk.exhausted and not was:
                self.emit("budget_exhausted", reason=self.desk.exhausted)
        elif isinstance(message, CallDone):
            self._done(worker_id, message, now)

    def pump(self) -> None:
        """Grant what the limiter now allows; called every loop step."""
        if self.desk is not None:
            for worker_id, answer in self.desk.pump(time.monotonic()):
                self.send(worker_id, answer)

    def next_wake(self) -> float | None:
        return self.desk.next_wake() if self.desk is not None else None

    def worker_lost(self, worker_id: str) -> None:
        if self.desk is not None:
            self.desk.worker_lost(worker_id, time.monotonic())

    def view(self) -> dict[str, Any] | None:
        return self.desk.view() if self.desk is not None else None

    def _done(self, worker_id: str, message: CallDone, now: float) -> None:
        assert self.desk is not None
        usage = self.desk.done(message, now)
        if usage is not None:
            self.emit("usage", **usage, sync=False)
            if "overrun" in usage:
                self.emit(
                    "budget_overrun", worker=worker_id, task=usage["task"], amount=usage["overrun"]
                )
        elif message.halt and not self.halt_reason:
            self.halt_reason = message.error
            self.emit("run_halting", reason=message.error)
        elif message.status in ("retry", "fatal"):
            self.emit(
                "call_failed",
                worker=worker_id,
                status=message.status,
                error=message.error,
                retry_after=message.retry_after,
                sync=False,
            )

    def _reported(self, worker_id: str, role: str, report: UsageReport) -> None:
        """Agent CLIs report cost only after a run, so pd cannot reserve ahead: it stops
        starting new work once the reported spend reaches the budget."""
        self.emit(
            "usage",
            worker=worker_id,
            task=report.task_id,
            role=role,
            model=report.model,
            usage=report.usage,
            cost=report.cost_usd,
            sync=False,
        )
        if report.cost_usd is not None:
            self.external_spent += Decimal(report.cost_usd)
        spent_all = self.budget is not None and self.external_spent >= self.budget
        if spent_all and not self.halt_reason:
            self.halt_reason = (
                f"budget exhausted: agents reported ${self.external_spent} of ${self.budget}"
            )
            self.emit("budget_exhausted", reason=self.halt_reason)
