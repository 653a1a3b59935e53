"""The event log's fsync, on a thread of its own, so the loop runs on while the disk works.

In group commit the coordinator asks for its turn's events to be made durable
(``ask``) and goes back to reading its pipes; the effects of those events (messages to
workers) wait in the pool until ``done`` covers them. An fsync took 2-4 ms of every
turn in which the loop did nothing; now the next turn's work overlaps it. A spawn, a
kill or the end of the run still ``wait``. The thread says it finished by writing a
byte to a pipe the loop polls beside its workers' (``wakeup_fd``), so a message waits
for its fsync and no longer.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

from orchestrator.errors import InfraError


def not_durable(error: BaseException) -> InfraError:
    """What pd raises when the event log could not be written or fsync'd (a full or
    failing disk)."""
    return InfraError(
        f"could not make the event log durable: {error} "
        "(free space or fix the disk, then `pd resume`)"
    )


class Syncer:
    """Calls ``fsync(seq)`` on its thread for the highest ``seq`` asked, one at a time."""

    def __init__(self, fsync: Callable[[int], None]) -> None:
        self._fsync = fsync
        self._cond = threading.Condition()
        self._wanted = 0
        self.done = 0  # every seq up to this one is durable
        self._error: BaseException | None = None
        self._stopping = False
        self.wakeup_fd, self._wake = os.pipe()  # not inherited by children (PEP 446)
        os.set_blocking(self.wakeup_fd, False)
        os.set_blocking(self._wake, False)
        self._thread = threading.Thread(target=self._run, name="pd-fsync", daemon=True)
        self._thread.start()

    def ask(self, seq: int) -> None:
        """Make every event up to ``seq`` durable soon; raises what a past fsync raised."""
        with self._cond:
            self._want(seq)

    def wait(self, seq: int) -> None:
        """``ask``, then return once it is done."""
        with self._cond:
            self._want(seq)
            while self.done < seq and self._error is None:
                self._cond.wait()
            self._raise_failure()

    def _want(self, seq: int) -> None:
        """(Under the condition's lock.)"""
        self._raise_failure()
        if seq > self._wanted:
            self._wanted = seq
            self._cond.notify_all()

    def take_wakeups(self) -> None:
        """Empty the wake-up pipe (the loop calls this when ``wakeup_fd`` was ready)."""
        try:
            while os.read(self.wakeup_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        """Finish what was asked, then end the thread and close the pipe."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        os.close(self.wakeup_fd)
        os.close(self._wake)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise not_durable(self._error) from self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._wanted <= self.done and not self._stopping:
                    self._cond.wait()
                if self._wanted <= self.done:
                    return  # stopping, and nothing is left to do
                target = self._wanted
            try:
                self._fsync(target)
            except BaseException as error:  # a full or failing disk: the loop must hear
                with self._cond:
                    self._error = error
                    self._cond.notify_all()
                self._wake_loop()
                return
            with self._cond:
                self.done = target
                self._cond.notify_all()
            self._wake_loop()

    def _wake_loop(self) -> None:
        # A full pipe holds wake-ups enough: the loop has yet to take them.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake, b"\0")
