"""The coordinator's record of a run: each event goes to the run store first, then to
whoever listens (the CLI's live output), and the state snapshot follows the events.

Record first, then tell: the event log is the truth ``pd status``, ``pd logs`` and
``pd resume`` rebuild from. The permit thread records too (``record_soon``); its events
are told by the main loop, which owns the listener.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from orchestrator.engine.snapshot import state_interval
from orchestrator.record import events as ev
from orchestrator.record.store import RunStore


class Journal:
    """Records, tells and snapshots one run. ``snapshot(**final)``: the state as JSON;
    ``size()``: the number of tasks, which spaces the snapshots out as the graph grows."""

    def __init__(
        self,
        store: RunStore,
        listener: Callable[[ev.Event], None] | None,
        snapshot: Callable[..., str],
        size: Callable[[], int],
    ) -> None:
        self.store = store
        self._listener = listener or (lambda event: None)
        self._snapshot, self._size = snapshot, size
        self._from_threads: queue.SimpleQueue[ev.Event] = queue.SimpleQueue()
        self._dirty = True
        self._written = 0.0

    def record(self, event: ev.Event, sync: bool = True) -> None:
        """``sync=False`` (informational) is made durable once per loop turn instead."""
        self._tell(self.store.append(event, sync=sync))

    def record_soon(self, event: ev.Event) -> None:
        """``record`` from another thread (the store is thread-safe): recorded at once,
        durable by the end of the turn, told by the main loop's ``tell_recorded``."""
        self._from_threads.put(self.store.append(event, sync=False))

    def tell_recorded(self) -> None:
        while True:
            try:
                self._tell(self._from_threads.get_nowait())
            except queue.Empty:
                return

    def show(self, event: ev.Event) -> None:
        """Tell the listener of an event that is not recorded (stamped now)."""
        self._listener(event.stamped(0, time.time()))

    def _tell(self, event: ev.Event) -> None:
        """``pd logs`` renders the coordinator's lines from the event log itself
        (``eventtext.log_line``): the listener is the CLI's live output alone."""
        self._dirty = True
        self._listener(event)

    def write_state(self, force: bool = False, **final: Any) -> None:
        """The snapshot (``state.json``), when events came since the last one and the
        interval for this graph's size has passed; at once when ``force``."""
        now = time.monotonic()
        if not force and (not self._dirty or now - self._written < state_interval(self._size())):
            return
        self.store.write_out()  # the events are never behind the snapshot
        self.store.write_state_text(self._snapshot(**final))
        self._dirty, self._written = False, now
