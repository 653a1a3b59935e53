"""The child side of the pool: what every worker and merger process does first
(``child_setup``: Ctrl-C is the coordinator's, and the child dies with its creator), and
a request/reply loop (``serve``) for children that only answer.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import psutil

from orchestrator.wire.messages import Message, Shutdown, from_bytes


def child_setup() -> None:
    """First thing in every child: let the coordinator decide about Ctrl-C, and get a
    SIGTERM the moment the process that started us dies, so a killed coordinator never
    leaves a worker, or a merger about to move the target branch, behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent blocks SIGINT around start() and spawn keeps the mask across exec;
    # a blocked signal would reach no command we run, not even one that handles it.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if os.name != "posix":
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: our direct parent
    except (OSError, AttributeError):
        pass
    # PDEATHSIG alone is not enough under a forkserver: our direct parent is the
    # forkserver, and it lives as long as any of its children holds its "alive" pipe,
    # which every child inherits. So watch the coordinator itself (the process that
    # started us: multiprocessing's parent, else our parent).
    parent = mp.parent_process()
    _watch_creator(parent.pid if parent is not None else os.getppid())


_creator_gone = threading.Event()


def creator_alive() -> bool:
    """False once the process that started this child has died (see ``child_setup``)."""
    return not _creator_gone.is_set()


def _watch_creator(pid: int | None) -> None:
    """SIGTERM ourselves when ``pid`` (our creator) dies; at once if it already has."""
    if not pid or not _child_of(pid):  # died before we looked: we were adopted
        _creator_gone.set()
        os.kill(os.getpid(), signal.SIGTERM)
        return
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable when the process has ended
        else:
            while psutil.pid_exists(pid) and _child_of(pid):
                time.sleep(0.1)
        _creator_gone.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="pd-lifeline", daemon=True).start()


def _child_of(pid: int) -> bool:
    """Whether ``pid`` started us: our parent, or the parent of the forkserver that forked
    us (the forkserver ends when that process does, and takes us with it)."""
    ppid = os.getppid()
    if ppid == pid:
        return True
    try:
        return bool(psutil.Process(ppid).ppid() == pid)
    except psutil.Error:
        return False


def serve(conn: Connection, handle: Callable[[Message], Message | None]) -> None:
    """The child side of a request/reply worker: answer each message with ``handle``'s
    reply (if any) until Shutdown or until the parent's end of the pipe closes."""
    while True:
        try:
            message = from_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if isinstance(message, Shutdown):
            return
        reply = handle(message)
        if reply is not None:
            conn.send_bytes(reply.to_bytes())
