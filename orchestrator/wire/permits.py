"""Messages between a worker and the coordinator's permit desk, around every model call:
ask for tokens, the grant or denial, and what the call then cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.wire.base import Message


@dataclass
class AcquireTokens(Message):
    """Ask for a rate-limit permit and a budget reservation before one model call."""

    worker_id: str
    request_id: int
    task_id: str
    provider: str
    model: str
    input_tokens: int
    max_output: int
    worst_case_input: int = 0  # an upper bound, for the budget reservation


@dataclass
class Grant(Message):
    """A rate-limit permit, and the budget reserved for the call. It may arrive up to
    ``GRANT_AHEAD`` early: the call must not go out before ``not_before``."""

    request_id: int
    permit_id: int
    queued: float = 0.0  # seconds the request waited for room in the limiter
    send_by: float = 0.0  # time.monotonic() after which the permit must not be used (0: any)
    not_before: float = 0.0  # time.monotonic() from which the call may be sent (0: at once)
    max_output: int = 0  # a lower max_tokens the budget still covers (0: as asked)


@dataclass
class Deny(Message):
    """The call must not be made: ``reason`` says why (budget, request too large)."""

    request_id: int
    reason: str
    budget: bool = False


@dataclass
class CallSent(Message):
    """The call's request went on the wire at ``at`` (time.monotonic(), one clock for
    every process on Linux): the limiter counts the call from then, however late."""

    worker_id: str
    request_id: int
    permit_id: int
    at: float


@dataclass
class CallDone(Message):
    """How a granted call ended: ``ok`` with usage, ``retry`` (429/5xx), ``fatal``, or
    ``not_sent``. The coordinator settles the limiter and the ledger from it."""

    worker_id: str
    request_id: int
    permit_id: int
    status: str
    usage: dict[str, int] = field(default_factory=dict)
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    halt: bool = False  # a failure no retry can cure (bad key, spend limit): stop the run
    permit_rtt: float | None = None  # seconds the permit took, less its time in the queue


@dataclass
class UsageReport(Message):
    """Usage a command agent reported after its run (it calls its model itself, so
    pd can only account for it afterwards)."""

    worker_id: str
    task_id: str
    model: str
    usage: dict[str, int]
    cost_usd: str | None = None
