"""The coordinator's permit thread: every worker's permit pipe answered at once.

A model call waits for its permit, so the permit round trip is on every call's path.
The coordinator's main loop does slow things between its waits (fsyncs, snapshots,
spawning a worker), and a permit queued behind them waited tens of milliseconds. This
thread reads nothing but the workers' permit pipes (``WorkerPool`` side channels) and
answers from the run's one ``Metering``, under its lock, the moment a request arrives or
a queued one becomes grantable.

Only this thread reads or closes a permit pipe. A pipe that ends (its worker died or
was stopped) is drained first, then the worker's calls are given up, so a request the
worker sent just before dying can never be granted after its calls were released.
"""

from __future__ import annotations

import os
import selectors
import threading
import time
from contextlib import suppress
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from orchestrator.system import oshints
from orchestrator.wire.messages import from_bytes

if TYPE_CHECKING:
    from orchestrator.limits.meter import Metering


class PermitLoop:
    def __init__(self, metering: Metering) -> None:
        self.metering = metering
        self._conns: dict[Connection, tuple[str, str]] = {}  # -> (worker id, role)
        self._current: dict[str, Connection] = {}  # worker id -> its live pipe
        self._pending: list[tuple[str, str, Connection]] = []
        self._pending_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe wakes the thread all the same
        # One selector for the thread's life: building one per wait (as
        # ``multiprocessing.connection.wait`` does) cost more than answering the ask.
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="permits", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def attach(self, worker_id: str, role: str, conn: Connection) -> None:
        """Serve a (new) worker process's permit pipe; called by the main thread."""
        with self._pending_lock:
            self._pending.append((worker_id, role, conn))
        self._wake()

    def stop(self) -> None:
        """End the thread and close every pipe it held; safe to call twice."""
        if self._stopping:
            return
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(5)
        for conn in [*self._conns, *(c for _, _, c in self._pending)]:
            conn.close()
        self._conns.clear()
        self._pending.clear()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # ---- the thread --------------------------------------------------------------

    def _wake(self) -> None:
        with suppress(OSError):  # the pipe is full (the thread wakes anyway) or closed
            os.write(self._wake_w, b"!")

    def _run(self) -> None:
        oshints.quick()
        oshints.name_thread("pd-permits")
        while not self._stopping:
            self._take_pending()
            wake = self.metering.next_wake()
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.data is None:
                    os.read(self._wake_r, 4096)
                elif key.data in self._conns:
                    self._read(key.data)
            self._send_all(self.metering.pump())

    def _take_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for worker_id, role, conn in pending:
            old = self._current.get(worker_id)
            if old is not None and old in self._conns:
                self._drain(old)  # the old process is dead: finish it first
            self._conns[conn] = (worker_id, role)
            self._current[worker_id] = conn
            self._selector.register(conn, selectors.EVENT_READ, conn)

    def _read(self, conn: Connection) -> None:
        """Answer the one message the selector found on ``conn`` (the next select finds
        any more), or give up the worker's calls at the pipe's end."""
        worker_id, role = self._conns[conn]
        try:
            message = from_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            self._end(conn)
            return
        self._send_all(self.metering.handle(worker_id, role, message))

    def _drain(self, conn: Connection) -> None:
        """Answer what a dead process's pipe still holds (it ends at once; one that stays
        silent for a second counts as ended), then give up its calls."""
        worker_id, role = self._conns[conn]
        with suppress(EOFError, OSError):
            while conn.poll(1.0):
                message = from_bytes(conn.recv_bytes())
                self._send_all(self.metering.handle(worker_id, role, message))
        self._end(conn)

    def _end(self, conn: Connection) -> None:
        worker_id, _ = self._conns[conn]
        del self._conns[conn]
        if self._current.get(worker_id) is conn:
            del self._current[worker_id]
        self._selector.unregister(conn)
        conn.close()
        self.metering.worker_lost(worker_id)

    def _send_all(self, answers: list) -> None:
        for worker_id, answer in answers:
            conn = self._current.get(worker_id)
            if conn is None:
                continue
            with suppress(OSError):  # it died: the pipe's end comes through _read
                conn.send_bytes(answer.to_bytes())
