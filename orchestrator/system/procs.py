"""Run shell commands (setup, gate, agent tools) so that none of them can outlive pd.

Each command runs as ``bash -c`` in a new session, i.e. its own process group, so a
timeout or shutdown can kill the command *and* everything it started. On Linux the child
also asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so a worker or
merger killed with ``kill -9`` does not leave a test suite running behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from orchestrator.system.sandbox import Sandbox

DEFAULT_OUTPUT_CAP = 200_000
KILL_GRACE = 2.0
_PR_SET_PDEATHSIG = 1

# Process groups started by run_shell and still running: pgid -> Popen. A plain dict and
# no lock on purpose: kill_all_running is called from signal handlers, and a handler that
# waits for a lock held by the code it interrupted would deadlock. Single dict operations
# are atomic under the GIL.
_RUNNING: dict[int, subprocess.Popen[bytes]] = {}


def _load_prctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """Resolve prctl once, in the parent: the child between fork and exec must not
    dlopen or allocate (another thread may hold the loader or malloc lock)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with(parent: int) -> Callable[[], None]:
    """preexec_fn for a child of process ``parent`` (``os.getpid()`` before the fork):
    SIGKILL the child when the thread that started it dies, and give it back the default
    SIGINT (workers ignore it, and an ignored signal survives exec). A parent that died
    before the child asked for that (a SIGTERM on a loaded machine, between fork and
    prctl) sends no signal: the child then kills itself instead of running orphaned."""

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@dataclass
class ShellResult:
    """What a command did. ``output`` is stdout+stderr, capped (head and tail kept)."""

    returncode: int
    output: str
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of output, for feedback to agents and humans."""
        return "\n".join(self.output.rstrip("\n").splitlines()[-lines:])


class _CappedBuffer:
    """Keeps the first and last ``cap // 2`` bytes of a stream and counts what is cut."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.cut = 0

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        extra = len(self.tail) - self.half
        if extra > 0:
            del self.tail[:extra]
            self.cut += extra

    def text(self) -> str:
        head = self.head.decode(errors="replace")
        tail = self.tail.decode(errors="replace")
        if self.cut:
            return f"{head}\n[... {self.cut} chars cut ...]\n{tail}"
        return head + tail


def _pump(stream: IO[bytes], buffer: _CappedBuffer, sink: IO[bytes] | None) -> None:
    """Reader thread: drain the pipe so the command never blocks on a full pipe.

    It owns ``sink`` and closes it, so a straggler still writing cannot hit a closed file.
    """
    try:
        while chunk := stream.read1(65536):  # type: ignore[attr-defined]
            buffer.add(chunk)
            if sink is not None:
                sink.write(chunk)
                sink.flush()
    finally:
        stream.close()
        if sink is not None:
            sink.close()


def _group_alive(pgid: int) -> bool:
    """Whether the group has a member that is not a zombie.

    ``killpg(pgid, 0)`` alone is not enough: orphans are reaped by init, and some inits
    (containers, microVMs) take a second or more, so a dead group would look alive.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def kill_group(
    pgid: int, grace: float = KILL_GRACE, leader: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM the group, give it up to ``grace`` seconds, then SIGKILL whatever is left.

    ``leader`` (our own child) is reaped while waiting; otherwise its zombie would keep the
    group alive until the deadline.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=grace)
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_all_running(grace: float = 0.5) -> None:
    """Kill every process group run_shell has running; safe to call from a signal handler.

    Also every child of ours that leads a group of its own: a command whose Popen has
    not returned yet is running but not registered (on a loaded machine a SIGTERM landed
    there, and the gate's background child outlived the merger)."""
    groups: dict[int, subprocess.Popen[bytes] | None] = dict(_RUNNING)
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children():
            with contextlib.suppress(OSError):
                if os.getpgid(child.pid) == child.pid:
                    groups.setdefault(child.pid, None)
    for pgid, proc in groups.items():
        kill_group(pgid, grace, leader=proc)
        _RUNNING.pop(pgid, None)


def run_shell(
    command: str,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    output_path: Path | str | None = None,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    sandbox: Sandbox | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ShellResult:
    """Run ``bash -c command`` in ``cwd``; stdout and stderr merged.

    ``env`` is the command's complete environment (None: inherit ours), so a caller that
    scrubbed secrets out of it is not undone here. ``output_path``, if given, receives the
    full output as it is produced. On timeout the whole process group is killed. When the
    command ends, anything it left running in its group is killed too (otherwise a
    background child holding the pipe open would keep us reading forever). With a
    ``sandbox`` the command runs inside it, with the sandbox's environment. ``on_start``
    hears the command's process group as soon as it exists (to cancel it from another
    thread: ``os.killpg``).
    """
    argv, full_env = ["bash", "-c", command], dict(os.environ if env is None else env)
    if sandbox is not None:
        argv, full_env = sandbox.command(argv, full_env)
    start = time.monotonic()
    buffer = _CappedBuffer(output_cap)
    sink = open(output_path, "wb") if output_path is not None else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with(os.getpid()),
        )
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    pgid = proc.pid  # start_new_session: the child leads its own process group
    _RUNNING[pgid] = proc
    assert proc.stdout is not None
    reader = threading.Thread(target=_pump, args=(proc.stdout, buffer, sink), daemon=True)
    reader.start()
    timed_out = False
    try:
        if on_start is not None:
            on_start(pgid)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        kill_group(pgid, KILL_GRACE, leader=proc)
        proc.wait()
        _RUNNING.pop(pgid, None)
    # A process that left our group (its own setsid) may still hold the pipe open; give
    # the reader a moment, then return what we have rather than hang.
    reader.join(timeout=2)
    return ShellResult(
        returncode=proc.returncode,
        output=buffer.text(),
        timed_out=timed_out,
        seconds=time.monotonic() - start,
    )
