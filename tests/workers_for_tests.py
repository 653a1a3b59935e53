"""Module-level process targets for the pool, store and control tests.

With the ``spawn`` start method a child imports its target by module and name, so every
target lives here, at module level, and takes ``(conn, worker_id, *args)`` like a real
worker. Data the tests need back travels as ``Progress`` messages whose ``text`` is JSON.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.messages import Heartbeat, Progress, Ready, Shutdown, from_bytes
from orchestrator.pool import child_setup
from orchestrator.store import RunStore

_PR_SET_CHILD_SUBREAPER = 36


def tell(conn: Connection, worker_id: str, **data: Any) -> None:
    """Send test data to the parent as one ``Progress`` message."""
    conn.send_bytes(Progress(worker_id, "test", json.dumps(data)).to_bytes())


def echo(conn: Connection, worker_id: str, setup: bool = True) -> None:
    """Say Ready, then send every message back until ``Shutdown``."""
    if setup:
        child_setup()
    conn.send_bytes(Ready(worker_id, os.getpid()).to_bytes())
    while True:
        raw = conn.recv_bytes()
        if isinstance(from_bytes(raw), Shutdown):
            return
        conn.send_bytes(raw)


def last_words(conn: Connection, worker_id: str, count: int, exitcode: int) -> None:
    """Send ``count`` numbered messages and exit at once, without reading anything."""
    for number in range(count):
        tell(conn, worker_id, n=number)
    os._exit(exitcode)


def quiet(conn: Connection, worker_id: str) -> None:
    """Say Ready, then never send anything again (a hung worker)."""
    conn.send_bytes(Ready(worker_id, os.getpid()).to_bytes())
    time.sleep(120)


def heartbeat_while_blocked(conn: Connection, worker_id: str, interval: float) -> None:
    """Heartbeat from a thread while the main thread is blocked (a long model call)."""

    def beat() -> None:
        while True:
            conn.send_bytes(Heartbeat(worker_id).to_bytes())
            time.sleep(interval)

    conn.send_bytes(Ready(worker_id, os.getpid()).to_bytes())
    threading.Thread(target=beat, daemon=True).start()
    time.sleep(120)


def ignore_shutdown(conn: Connection, worker_id: str, ignore_sigterm: bool) -> None:
    """Never read the pipe (so ``Shutdown`` goes unheard); maybe ignore SIGTERM too."""
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send_bytes(Ready(worker_id, os.getpid()).to_bytes())
    time.sleep(120)


def _sleeper_after_setup(conn: Connection) -> None:
    child_setup()
    conn.send(os.getpid())
    time.sleep(120)


def spawn_grandchild(conn: Connection, worker_id: str) -> None:
    """Start a child that runs ``child_setup``, report its pid, then wait to be killed."""
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_sleeper_after_setup, args=(theirs,), daemon=True)
    child.start()
    tell(conn, worker_id, grandchild=mine.recv())
    time.sleep(120)


def _setup_after_orphaned(conn: Connection, first_parent: int) -> None:
    """Run ``child_setup`` only once the parent that started us is already gone."""
    deadline = time.monotonic() + 10
    while os.getppid() == first_parent and time.monotonic() < deadline:
        time.sleep(0.01)
    conn.send({"pid": os.getpid(), "first_parent": first_parent, "parent": os.getppid()})
    child_setup()
    time.sleep(120)


def _start_and_vanish(conn: Connection) -> None:
    ctx = mp.get_context("spawn")
    ctx.Process(target=_setup_after_orphaned, args=(conn, os.getpid()), daemon=True).start()
    os._exit(0)  # no atexit: the daemonic child must outlive us


def subreaper_with_orphan(conn: Connection, worker_id: str) -> None:
    """Become a child subreaper (as ``systemd --user`` is), start a process that starts a
    child and exits at once, and report that orphan, which the kernel hands to us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    middle = ctx.Process(target=_start_and_vanish, args=(theirs,))
    middle.start()
    tell(conn, worker_id, **mine.recv())
    while True:  # reap the orphan when it dies, as a real subreaper does
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.05)


def hold_lock(conn: Connection, worker_id: str, lock_path: str) -> None:
    """Take the coordinator lock, say so, and keep it until told to go (or killed)."""
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=2)
    except Timeout:
        tell(conn, worker_id, locked=False)
        return
    tell(conn, worker_id, locked=True)
    conn.recv_bytes()  # any message: exit without releasing, the OS drops the lock


def state_version(version: int, size: int) -> dict[str, Any]:
    """A large state snapshot whose every part depends on ``version``."""
    return {
        "version": version,
        "blob": f"{version:08d}" * (size // 8),
        "items": [{"id": i, "v": version} for i in range(size // 200)],
        "tail": version,
    }


def read_states(conn: Connection, worker_id: str, run_dir: str, size: int) -> None:
    """Read ``state.json`` in a loop until told to stop; report what every read saw."""
    store = RunStore(Path(run_dir))
    tell(conn, worker_id, started=True)
    reads, versions, bad = 0, set(), []
    while not conn.poll():
        try:
            state = store.read_state()
        except ValueError as exc:  # JSONDecodeError: a partial file was visible
            bad.append(f"unparseable: {exc}")
            continue
        reads += 1
        if state is None:
            bad.append("missing state.json")
        elif state != state_version(state["version"], size):
            bad.append(f"mixed content in version {state['version']}")
        else:
            versions.add(state["version"])
    tell(conn, worker_id, reads=reads, versions=sorted(versions), bad=bad[:5])
