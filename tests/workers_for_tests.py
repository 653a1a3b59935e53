"""Module-level process targets for the pool, store and control tests.

With the ``spawn`` start method a child imports its target by module and name, so every
target lives here, at module level, and takes ``(conn, worker_id, *args)`` like a real
worker. Data the tests need back travels as ``Progress`` messages whose ``text`` is JSON.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.engine.child import child_setup
from orchestrator.record.store import RunStore
from orchestrator.wire.messages import Heartbeat, Progress, Ready, Shutdown, from_bytes

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


# Grandchildren are plain commands, as a worker's gate or tool commands are (a daemonic
# multiprocessing child may not start multiprocessing children of its own).
GRANDCHILD = """
import os, time
from orchestrator.engine.child import child_setup
child_setup()
print(os.getpid(), flush=True)
time.sleep(120)
"""

# A plain Python program that starts a worker-like child the way the pool does
# (multiprocessing, spawn) and exits at once, before that child has run child_setup.
START_AND_VANISH = """
import multiprocessing, os, sys
sys.path.insert(0, sys.argv[1])
from tests.workers_for_tests import setup_after_orphaned
child = multiprocessing.get_context("spawn").Process(
    target=setup_after_orphaned, args=(os.getpid(),), daemon=True)
child.start()
os._exit(0)  # no atexit: the daemonic child must outlive us
"""


CATCH_SIGINT = """
import os, signal, time
caught = []
signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
os.kill(os.getpid(), signal.SIGINT)
deadline = time.monotonic() + 1
while not caught and time.monotonic() < deadline:
    time.sleep(0.01)
print("caught" if caught else "missed")
"""


def interruptible(conn: Connection, worker_id: str, setup: bool) -> None:
    """An echo worker that starts the way a Python program started from a terminal
    does (SIGINT delivered, KeyboardInterrupt), then maybe runs ``child_setup``."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    echo(conn, worker_id, setup)


def spawn_grandchild(conn: Connection, worker_id: str) -> None:
    """Start a command that runs ``child_setup``, report its pid, wait to be killed."""
    child = subprocess.Popen([sys.executable, "-c", GRANDCHILD], stdout=subprocess.PIPE)
    tell(conn, worker_id, grandchild=int(child.stdout.readline()))
    time.sleep(120)


def setup_after_orphaned(first_parent: int) -> None:
    """Run ``child_setup`` only once the parent that started us is already gone."""
    deadline = time.monotonic() + 10
    while os.getppid() == first_parent and time.monotonic() < deadline:
        time.sleep(0.01)
    info = {"pid": os.getpid(), "first_parent": first_parent, "parent": os.getppid()}
    print(json.dumps(info), flush=True)
    child_setup()
    time.sleep(120)


def subreaper_with_orphan(conn: Connection, worker_id: str) -> None:
    """Become a child subreaper (as ``systemd --user`` is), start a program that starts a
    child and exits at once, and report that orphan, which the kernel hands to us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    root = str(Path(__file__).resolve().parents[1])
    middle = subprocess.Popen(
        [sys.executable, "-c", START_AND_VANISH, root], stdout=subprocess.PIPE
    )
    tell(conn, worker_id, **json.loads(middle.stdout.readline()))
    while True:  # reap the orphan when it dies, as a real subreaper does
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.05)


def run_command_catching_sigint(conn: Connection, worker_id: str) -> None:
    """Run a command that handles SIGINT itself, as a gate or tool command might."""
    child_setup()
    out = subprocess.run(
        [sys.executable, "-c", CATCH_SIGINT], capture_output=True, text=True, timeout=10
    )
    tell(conn, worker_id, result=out.stdout.strip(), stderr=out.stderr[-500:])


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


def ask_permits(
    conn: Connection, worker_id: str, asks: int, then_exit: bool, side: Connection | None = None
) -> None:
    """Ask for ``asks`` permits on the side pipe without waiting for answers, report the
    answers that came within a second, then exit at once or wait for ``Shutdown``."""
    assert side is not None
    from orchestrator.wire.messages import AcquireTokens

    for request_id in range(1, asks + 1):
        ask = AcquireTokens(
            worker_id=worker_id,
            request_id=request_id,
            task_id="t",
            provider="anthropic",
            model="claude-haiku-4-5",
            input_tokens=10,
            max_output=10,
            worst_case_input=10,
        )
        side.send_bytes(ask.to_bytes())
    if then_exit:
        os._exit(0)
    answers = []
    while side.poll(1.0):
        answers.append(json.loads(side.recv_bytes()))
    tell(conn, worker_id, answers=answers)
    while not isinstance(from_bytes(conn.recv_bytes()), Shutdown):
        pass
