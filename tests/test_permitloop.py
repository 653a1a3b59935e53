"""The coordinator's permit thread over real worker processes and their side pipes."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

from orchestrator.engine.pool import WorkerPool
from orchestrator.limits.bucket import BucketLimits
from orchestrator.limits.client import PermitClient
from orchestrator.limits.ledger import CostLedger, PriceTable
from orchestrator.limits.meter import Metering
from orchestrator.limits.permit_thread import PermitLoop
from orchestrator.limits.permitdesk import PermitDesk
from orchestrator.limits.ratelimit import RateLimiter
from orchestrator.record import events as ev
from orchestrator.wire.messages import Progress
from tests import workers_for_tests as targets

ASK = {"task_id": "t", "provider": "anthropic", "model": "claude-haiku-4-5",
       "input_tokens": 10, "max_output": 10, "worst_case_input": 10}  # fmt: skip


def metering(requests: int | None, window: float = 0.5) -> tuple[Metering, list[dict]]:
    limits = {"anthropic": BucketLimits(requests=requests, window=window)} if requests else {}
    ledger = CostLedger(PriceTable.load(), Decimal("5"))
    recorded: list[ev.Event] = []
    desk = PermitDesk(RateLimiter(limits, margin=0.0), ledger)
    return Metering(desk, Decimal("5"), recorded.append), recorded


def wait_until(check: Any, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_queued_asks_are_granted_when_the_window_frees_and_usage_is_recorded() -> None:
    from multiprocessing import Pipe

    meter, recorded = metering(requests=1, window=0.4)
    loop = PermitLoop(meter)
    loop.start()
    clients = []
    for worker in ("w1", "w2"):
        ours, theirs = Pipe()
        loop.attach(worker, "dev", theirs)
        clients.append(PermitClient(worker, ours))
    try:
        first = clients[0].acquire(ASK, lambda: False)
        assert meter.desk is not None
        granted = meter.desk.limiter._grants[first[1]].permit.granted_at
        second = clients[1].acquire(ASK, lambda: False)  # waits for the window
        # On the limiter's own clock: the second permit starts when the first one's
        # window has passed (an injected clock drives the limiter's own tests).
        assert meter.desk.limiter._grants[second[1]].permit.granted_at >= granted + 0.4
        assert first == (1, 1) and second[0] == 1 and second[1] == 2
        usage = {"input_tokens": 10, "output_tokens": 3}
        clients[0].done(*first, "ok", usage=usage, permit_rtt=clients[0].last_rtt)
        wait_until(lambda: recorded)
        usage = recorded[0]
        assert isinstance(usage, ev.UsageRecorded)
        assert usage.worker == "w1" and usage.usage["output_tokens"] == 3
        assert usage.permit_rtt == clients[0].last_rtt is not None
    finally:
        loop.stop()


def test_a_worker_that_dies_with_calls_open_leaves_no_reservation_behind() -> None:
    meter, _ = metering(requests=2, window=30.0)
    loop = PermitLoop(meter)
    loop.start()
    pool = WorkerPool("spawn")
    try:
        # five asks, two grantable: two permits granted and three queued when it dies
        handle = pool.spawn("w1", targets.ask_permits, 5, True, side_channel=True)
        loop.attach("w1", "dev", handle.side)
        handle.process.join(20)
        assert meter.desk is not None
        wait_until(lambda: meter.desk.ledger.reserved == 0 and not meter.desk._granted)
        assert meter.view()["waiting"] == 0
    finally:
        loop.stop()
        pool.shutdown_all()


def test_a_restarted_worker_gets_answers_on_its_new_pipe_after_the_old_one_is_read_out() -> None:
    meter, _ = metering(requests=3, window=30.0)
    loop = PermitLoop(meter)
    loop.start()
    first, second = WorkerPool("spawn"), WorkerPool("spawn")
    try:
        old = first.spawn("w1", targets.ask_permits, 2, True, side_channel=True)
        old.process.join(20)  # dead before the loop ever saw its pipe: its asks are unread
        loop.attach("w1", "dev", old.side)
        new = second.spawn("w1", targets.ask_permits, 2, False, side_channel=True)
        loop.attach("w1", "dev", new.side)  # same worker id, request ids from 1 again
        events: list = []
        wait_until(lambda: events.extend(second.poll(0.1)) or any(
            isinstance(e.message, Progress) for e in events))  # fmt: skip
        told = next(e.message.text for e in events if isinstance(e.message, Progress))
        # The old process's two asks were granted, then given up when its pipe ended
        # (they still count as sent): the new one's first ask takes the third request
        # of the window, its second waits. Had the new pipe been read first, giving up
        # the old calls would have dropped the new process's permit too.
        assert [a["type"] for a in json.loads(told)["answers"]] == ["Grant"]
        assert meter.desk is not None and len(meter.desk._granted) == 1
    finally:
        loop.stop()
        first.shutdown_all()
        second.shutdown_all()


def test_stop_ends_the_thread_and_closes_its_pipes() -> None:
    from multiprocessing import Pipe

    meter, _ = metering(requests=None)
    loop = PermitLoop(meter)
    loop.start()
    ours, theirs = Pipe()
    loop.attach("w1", "dev", theirs)
    client = PermitClient("w1", ours)
    assert client.acquire(ASK, lambda: False)[0] == 1
    loop.stop()
    assert not any(t.name == "permits" and t.is_alive() for t in threading.enumerate())
    assert theirs.closed
    loop.stop()  # twice is fine
