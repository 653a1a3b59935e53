"""A pool of long-lived worker processes, each on its own duplex pipe.

Like CPython's process pool, the parent waits on every pipe and process sentinel at once,
so a child that dies is noticed the moment it dies, not at the next heartbeat. The pool
knows nothing of tasks: it starts a module-level ``target(conn, worker_id, *args)`` in
each process and moves typed messages. The coordinator decides what they mean.
"""

from __future__ import annotations

import multiprocessing as mp
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

import psutil

from orchestrator.engine.frames import FrameReader, write_frame
from orchestrator.errors import PdError
from orchestrator.wire.messages import Message, Shutdown, from_bytes


@dataclass
class WorkerHandle:
    """One live (or just dead) worker process and what is needed to start it again."""

    id: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    process: BaseProcess
    conn: Connection
    started: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    restarts: int = 0
    ready: bool = False
    create_time: float | None = None  # with pid, identifies the process from outside
    # A second pipe for one latency-critical conversation (model-call permits), read by
    # whoever the parent hands it to, never by ``poll``; None unless asked for at spawn.
    side: Connection | None = None
    # Every message from the worker is read through this, never ``conn.recv_bytes``:
    # it may hold frames the pipe no longer does.
    reader: FrameReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = FrameReader(self.conn.fileno())

    @property
    def pid(self) -> int | None:
        return self.process.pid


@dataclass
class PoolEvent:
    """A message from a worker, or (``message`` None) the news that it died."""

    worker_id: str
    message: Message | None = None
    exitcode: int | None = None

    @property
    def died(self) -> bool:
        return self.message is None


class Record(Protocol):
    """The durable record the pool's effects wait for (the run store in group commit)."""

    def commit(self) -> None: ...  # every event an effect may wait for durable, now

    def commit_soon(self) -> None: ...  # the same, started in the background

    def durable(self) -> bool: ...  # the calling thread's events are on disk

    def due(self) -> int: ...  # the seq an effect the calling thread makes now waits for

    def synced(self) -> int: ...  # every event up to this seq is on disk

    @property
    def wakeup_fd(self) -> int | None: ...  # readable once a background commit ends

    def take_wakeups(self) -> None: ...


class UnrecordedEffect(RuntimeError):
    """An effect was about to happen before the events that caused it were durable: a
    crash then would leave a worker acting on something the record does not hold."""


# A forkserver is a clean process (started by exec, so our threads are no concern) that
# imports the workers' modules once and forks every worker from there: a worker is up in
# milliseconds instead of each one importing the SDKs (two seconds of CPU for anthropic)
# while the first calls are being made. Spawn where there is no forkserver.
DEFAULT_START_METHOD = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


class WorkerPool:
    """Spawn, watch, message, restart and stop worker processes.

    ``preload``: modules a forkserver imports before forking the first child (the first
    pool of a process sets them for the process's one forkserver).

    ``record``: every effect (a message sent, a spawn, a kill) first passes ``_barrier``,
    which commits the record and checks that it holds every event the caller appended
    (else ``UnrecordedEffect``). With a record, ``send`` queues the message and ``poll``
    (or the next spawn, kill or shutdown) delivers the queue after one commit: the
    messages of a loop step share one fsync."""

    def __init__(
        self,
        start_method: str | None = None,
        preload: Sequence[str] = (),
        record: Record | None = None,
    ) -> None:
        method = start_method or DEFAULT_START_METHOD
        self._ctx = mp.get_context(method)
        if method == "forkserver":
            self._ctx.set_forkserver_preload([__name__, *preload])
            # Start it now: its imports (most of a second of CPU) then overlap the rest of
            # the caller's start-up instead of holding up the first spawn. Our caller has
            # already taken the API keys out of the environment the forkserver inherits.
            forkserver.ensure_running()
        self.workers: dict[str, WorkerHandle] = {}
        self._record = record
        # Messages waiting for their causes to be durable: (worker, message, the seq of
        # the last event the sender had appended that an effect must wait for).
        self._outbox: list[tuple[str, Message, int]] = []
        self.effects = 0  # effects that passed the barrier

    def _barrier(self) -> None:
        """Where a spawn, kill or stop passes: the record is committed (waiting for the
        disk) and the queued messages go first, so effects keep their order."""
        if self._record is None:
            return
        self._record.commit()
        if not self._record.durable():
            raise UnrecordedEffect("an effect came before the events that caused it were durable")
        self.effects += 1
        self._release()

    def _release(self) -> None:
        """Send the queued messages whose causes are on disk, in the order they were
        queued (the first still waiting holds back the ones behind it)."""
        if not self._outbox:
            return
        synced, sent = self._record.synced(), 0  # type: ignore[union-attr]
        for worker_id, message, cause in self._outbox:
            if cause > synced:
                break
            self._send_now(worker_id, message)
            sent += 1
        del self._outbox[:sent]
        self.effects += sent

    def flush(self) -> None:
        """Send what may go; have the record commit, in the background, what the rest
        waits for (``poll`` sends it once the commit ends)."""
        if self._outbox:
            self._release()
        if self._outbox:
            self._record.commit_soon()  # type: ignore[union-attr]

    @property
    def waiting(self) -> int:
        """Messages queued until their causes are durable."""
        return len(self._outbox)

    def spawn(
        self,
        worker_id: str,
        target: Callable[..., None],
        *args: Any,
        side_channel: bool = False,
    ) -> WorkerHandle:
        """Start ``target(conn, worker_id, *args)``; with ``side_channel`` also pass it
        ``side=`` the child's end of a second pipe (the parent's end is ``handle.side``,
        new on every restart; it belongs to whoever reads it and ``poll`` leaves it be)."""
        if worker_id in self.workers:
            raise ValueError(f"worker {worker_id} already exists")
        self._barrier()
        handle = self._start(worker_id, target, args, side_channel)
        self.workers[worker_id] = handle
        return handle

    def _start(
        self, worker_id: str, target: Callable[..., None], args: tuple, side_channel: bool
    ) -> WorkerHandle:
        parent, child = self._ctx.Pipe(duplex=True)
        side, side_child = self._ctx.Pipe(duplex=True) if side_channel else (None, None)
        process = self._ctx.Process(
            target=target,
            args=(child, worker_id, *args),
            kwargs={"side": side_child} if side_child is not None else {},
            name=f"pd-{worker_id}",
            daemon=True,
        )
        # Children must not inherit our SIGINT handler's view: block it while they start,
        # so a Ctrl-C during spawn cannot kill a half-started child (dramatiq does this).
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        child.close()
        if side_child is not None:
            side_child.close()
        return WorkerHandle(
            id=worker_id,
            target=target,
            args=args,
            process=process,
            conn=parent,
            create_time=create_time_of(process.pid),
            side=side,
        )

    def send(self, worker_id: str, message: Message) -> bool:
        """Send one message; False when the worker's pipe is gone (it died). With a
        record, queued for the next ``flush`` (True when the worker is known)."""
        if self._record is not None:
            self._outbox.append((worker_id, message, self._record.due()))
            return worker_id in self.workers
        return self._send_now(worker_id, message)

    def _send_now(self, worker_id: str, message: Message) -> bool:
        try:
            write_frame(self.workers[worker_id].conn.fileno(), message.to_bytes())
            return True
        except (OSError, KeyError, ValueError):
            return False

    def poll(self, timeout: float | None) -> list[PoolEvent]:
        """Deliver queued messages, then wait up to ``timeout`` for messages or deaths;
        return them all.

        One ``select.poll`` over every pipe and sentinel serves the whole call: the
        messages are read a round at a time (one from each ready pipe, then ask again
        without waiting), where a readiness check per message cost a selector each.
        While messages wait for their causes' commit, the record's wake-up pipe is
        watched too: when it ends, they go at once (and the call returns)."""
        if self._record is not None and self._outbox:
            self._record.take_wakeups()  # old news: what they said, ``flush`` now sees
        self.flush()
        poller, by_fd = select.poll(), {}
        wakeup = self._record.wakeup_fd if self._record is not None and self._outbox else None
        if wakeup is not None:
            poller.register(wakeup, select.POLLIN)
        for handle in self.workers.values():
            # A dead worker's sentinel stays ready forever: once its death is reported
            # (pipe closed), waiting on it again would make every poll return at once.
            if not handle.conn.closed:
                for fd, is_sentinel in (
                    (handle.conn.fileno(), False),
                    (handle.process.sentinel, True),
                ):
                    by_fd[fd] = (handle, is_sentinel)
                    poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
        events: list[PoolEvent] = []
        now = time.monotonic()
        dying: dict[str, WorkerHandle] = {}
        while ready:
            for fd, _ in ready:
                if fd == wakeup:
                    self._record.take_wakeups()  # type: ignore[union-attr]
                    self._release()
                    if not self._outbox:
                        poller.unregister(fd)
                    continue
                handle, is_sentinel = by_fd[fd]
                if is_sentinel:
                    dying[handle.id] = handle
                    poller.unregister(fd)
                elif not self._read(handle, now, events):
                    poller.unregister(fd)  # end of file: its sentinel tells the rest
            ready = poller.poll(0)
        for handle in dying.values():
            if self.workers.get(handle.id) is handle and not handle.conn.closed:
                events.extend(self._drain(handle, now))  # last words before death
                handle.process.join(0.1)
                handle.conn.close()
                events.append(PoolEvent(handle.id, exitcode=handle.process.exitcode))
        return events

    def _read(self, handle: WorkerHandle, now: float, into: list[PoolEvent]) -> bool:
        """What a pipe poll said was ready holds: every whole message; False at its end."""
        frames = handle.reader.read()
        if frames is None:
            return False
        for raw in frames:
            into.append(PoolEvent(handle.id, from_bytes(raw)))
        if frames:
            handle.last_seen = now
        return True

    def drain(self, worker_id: str) -> list[PoolEvent]:
        """Messages already waiting from ``worker_id`` (alive or not), without blocking."""
        handle = self.workers.get(worker_id)
        if handle is None or handle.conn.closed:
            return []
        return self._drain(handle, time.monotonic())

    def _drain(self, handle: WorkerHandle, now: float) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        try:
            while handle.conn.poll() and self._read(handle, now, events):
                pass
        except OSError:
            pass
        return events

    def silent(self, max_silence: float, boot_grace: float, now: float | None = None) -> list[str]:
        """Workers heard from neither message nor heartbeat for ``max_silence`` seconds."""
        now = time.monotonic() if now is None else now
        out = []
        for handle in self.workers.values():
            limit = max_silence if handle.ready else boot_grace
            # The clock first: a liveness check is a system call, per worker per turn.
            if now - handle.last_seen > limit and handle.process.is_alive():
                out.append(handle.id)
        return out

    def kill(self, worker_id: str) -> None:
        """SIGKILL now; the death is then reported by ``poll`` like any other."""
        self._barrier()
        handle = self.workers[worker_id]
        if handle.process.is_alive():
            handle.process.kill()
            handle.process.join(2)

    def restart(self, worker_id: str) -> WorkerHandle:
        """A new process with the same target and arguments in the same slot."""
        old = self.workers[worker_id]
        self.kill(worker_id)  # passes the barrier
        old.conn.close()
        handle = self._start(worker_id, old.target, old.args, old.side is not None)
        handle.restarts = old.restarts + 1
        self.workers[worker_id] = handle
        return handle

    def remove(self, worker_id: str) -> None:
        self.kill(worker_id)
        handle = self.workers.pop(worker_id)
        handle.conn.close()

    def status(self, worker_id: str) -> dict[str, Any]:
        handle = self.workers[worker_id]
        return {
            "id": worker_id,
            "pid": handle.pid,
            "alive": handle.process.is_alive(),
            "exitcode": handle.process.exitcode,
            "restarts": handle.restarts,
            "silent_for": round(time.monotonic() - handle.last_seen, 2),
        }

    def active_count(self) -> int:
        return sum(1 for h in self.workers.values() if h.process.is_alive())

    def shutdown_all(self, grace: float = 2.0) -> None:
        """Ask every worker to stop, wait with one shared deadline, then terminate, then kill.
        When the record cannot be made durable (a failed disk) the messages waiting for it
        are dropped, every process is stopped all the same, and then the failure is raised."""
        failure: PdError | None = None
        try:
            self._barrier()
        except PdError as error:
            failure = error
            self._outbox.clear()  # their causes never reached the disk: they must not go
        for worker_id in list(self.workers):
            self._send_now(worker_id, Shutdown())
        deadline = time.monotonic() + grace
        for handle in self.workers.values():
            handle.process.join(max(0.0, deadline - time.monotonic()))
        for handle in self.workers.values():
            if handle.process.is_alive():
                handle.process.terminate()
        deadline = time.monotonic() + 0.5
        for handle in self.workers.values():
            handle.process.join(max(0.0, deadline - time.monotonic()))
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join(1)
            handle.conn.close()
        self.workers.clear()
        if failure is not None:
            raise failure


def create_time_of(pid: int | None) -> float | None:
    """A process's start time: with its pid, it names the process beyond PID reuse."""
    try:
        return psutil.Process(pid).create_time() if pid else None
    except psutil.Error:
        return None
