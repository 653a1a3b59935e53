"""What a step asks the world to do, in the order it must happen.

A step changes the run state and returns effects; the coordinator's shell carries them
out one by one. Order is the contract: an ``Emit`` comes before the ``Send`` it causes,
and the pool commits the event log before every send, spawn or kill, so nothing acts on
a decision the record does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.record import control
from orchestrator.record import events as ev
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.tasks.transitions import Change, apply
from orchestrator.wire.messages import Message


@dataclass(frozen=True)
class Emit:
    """Record an event (durable before the next effect that acts; ``sync=False``: by the
    end of the loop step), then tell the log and the listener."""

    event: ev.Event
    sync: bool = True


@dataclass(frozen=True)
class Show:
    """Tell the listener without recording (live progress text)."""

    event: ev.Event


@dataclass(frozen=True)
class Send:
    worker: str
    message: Message


@dataclass(frozen=True)
class Respawn:
    """A fresh process in the slot (or for the merger), with its own permit pipe."""

    worker: str


@dataclass(frozen=True)
class Kill:
    """Kill a process; its death comes back as a ``Died`` input."""

    worker: str


@dataclass(frozen=True)
class Retire:
    """Forget a worker's process for good."""

    worker: str


@dataclass(frozen=True)
class Answer:
    """Answer a control request (``problem``: why it was refused, or None)."""

    request: control.ControlRequest
    problem: str | None


@dataclass(frozen=True)
class NoteSession:
    """Append a line to the session log that later tasks are shown."""

    line: str


Effect = Emit | Show | Send | Respawn | Kill | Retire | Answer | NoteSession


class Effects(list[Effect]):
    """A step's effects, with the helpers every step uses to add them."""

    def emit(self, event: ev.Event, sync: bool = True) -> None:
        self.append(Emit(event, sync))

    def send(self, worker: str, message: Message) -> None:
        self.append(Send(worker, message))

    def apply(self, graph: TaskGraph, event: ev.Event) -> Change:
        """The one way a step changes a task: apply ``event`` to the graph (the
        transition fills in its outcome) and record what it returns."""
        change = apply(graph, event)
        self.emit(change.event)
        return change
