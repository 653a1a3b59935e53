"""What a step reacts to: one input at a time, all from the coordinator's shell."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.record import control
from orchestrator.wire.messages import Message


@dataclass(frozen=True)
class Received:
    """A message from a worker or the merger."""

    worker: str
    message: Message


@dataclass(frozen=True)
class Died:
    """A worker's or the merger's process ended."""

    worker: str
    exitcode: int | None


@dataclass(frozen=True)
class Control:
    """A request from another ``pd`` process (abort, handoff)."""

    request: control.ControlRequest


@dataclass(frozen=True)
class Tick:
    """Once per loop turn: hand out work. ``halted``: why the limits allow no new work
    (budget spent, provider refused), if they do not; ``silent``: workers that sent no
    heartbeat for ``silence`` seconds."""

    halted: str | None = None
    silent: list[str] = field(default_factory=list)
    silence: float = 0.0


Input = Received | Died | Control | Tick
