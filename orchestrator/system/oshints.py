"""Scheduling hints, so pd's control plane stays quick on a busy machine.

Every model call waits on a permit round trip: a worker's thread sends the ask, the
coordinator's permit thread answers, the worker's thread wakes. On a small machine where
sixteen workers and their commands share two cores, a woken thread can wait for the
next scheduler tick (4 ms at HZ=250) behind whatever runs. The hints, all best effort and
harmless where unsupported:

- workers (and the commands they start) run ``WORKER_NICE`` steps nicer than the
  coordinator and merger, so the one process everyone waits for wins a contended core;
- where the OS allows it (root, ``CAP_SYS_NICE``, or ``ulimit -r`` of at least 1 on
  Linux), the permit thread, and a worker's thread while it waits for its answer, run at
  the lowest real-time priority (``SCHED_RR`` 1): a woken real-time thread preempts
  normal work at once. Neither runs more than a few microseconds per message, and what
  they start gets the normal policy back (reset-on-fork). ``PD_REALTIME=0`` turns it off;
- otherwise they ask Linux (6.12+, EEVDF) for a short time slice, which helps a little.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
from collections.abc import Iterator

WORKER_NICE = 3
SHORT_SLICE_NS = 100_000  # the shortest custom slice Linux accepts
REALTIME_PRIORITY = 1  # the lowest: above every normal task, below the kernel's own threads
REALTIME_ENV = "PD_REALTIME"  # "0": never ask for real-time scheduling
# sched_setattr's syscall number here; None where there is none (not Linux, other CPUs).
_SCHED_SETATTR = (
    {"x86_64": 314, "aarch64": 274}.get(platform.machine())
    if platform.system() == "Linux"
    else None
)
_RESET_ON_FORK = 0x01
_PR_SET_NAME = 15
_refused = False  # the OS said no once: do not ask again in this process


class _SchedAttr(ctypes.Structure):
    _fields_ = [  # struct sched_attr, SCHED_ATTR_SIZE_VER0
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def short_slice() -> bool:
    """Normal scheduling with a short time slice for the calling thread; False where
    not possible."""
    if _SCHED_SETATTR is None:
        return False
    try:
        libc = _libc()
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        attr = _SchedAttr(
            ctypes.sizeof(_SchedAttr), 0, _RESET_ON_FORK, nice, 0, SHORT_SLICE_NS, 0, 0
        )
        return libc.syscall(_SCHED_SETATTR, 0, ctypes.byref(attr), 0) == 0
    except (OSError, AttributeError, ValueError):
        return False


def realtime() -> bool:
    """The calling thread at ``SCHED_RR`` 1 (reset on fork); False where not allowed."""
    global _refused
    if _refused or os.environ.get(REALTIME_ENV) == "0" or not hasattr(os, "SCHED_RR"):
        return False
    try:
        policy = os.SCHED_RR | getattr(os, "SCHED_RESET_ON_FORK", 0)
        os.sched_setscheduler(0, policy, os.sched_param(REALTIME_PRIORITY))
    except OSError:  # EPERM: no privilege, or a cgroup without real-time time
        _refused = True
        return False
    return True


def normal() -> None:
    """The calling thread back to normal scheduling (with a short slice where possible)."""
    if not short_slice():
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def quick() -> str:
    """The quickest waking the OS allows the calling thread, for good; what it got."""
    if realtime():
        return "real-time"
    return "short slice" if short_slice() else "normal"


@contextlib.contextmanager
def urgent() -> Iterator[None]:
    """Real-time while the block runs (a wait whose end everyone waits for), where allowed."""
    raised = realtime()
    try:
        yield
    finally:
        if raised:
            normal()


def name_thread(name: str) -> None:
    """Name the calling OS thread (``top -H``, ``ps -L``, ``perf sched``), Linux only;
    the kernel keeps the first 15 bytes."""
    if platform.system() != "Linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def as_worker(worker_id: str) -> None:
    """First thing in a worker process: a little nicer, quick to wake, and named."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)
    short_slice()
    name_thread(f"pd-{worker_id}")
