"""Scheduling hints, so pd's control plane stays quick on a busy machine.

Every model call waits on a permit round trip: a worker's thread sends the ask, the
coordinator's permit thread answers, the worker's thread wakes. On a small machine where
sixteen workers and their commands share two cores, each wake-up can wait behind
others' time slices. Two hints, both best effort and harmless where unsupported:

- workers (and the commands they start) run ``WORKER_NICE`` steps nicer than the
  coordinator and merger, so the one process everyone waits for wins a contended core;
- the threads that wait for permits ask Linux (6.12+, EEVDF) for a short time slice,
  which lets them preempt a running task as soon as they wake instead of at the end of
  its slice. Threads and processes they start get the default slice back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform

WORKER_NICE = 3
SHORT_SLICE_NS = 100_000  # the shortest custom slice Linux accepts
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_RESET_ON_FORK = 0x01


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


def short_slice() -> bool:
    """Ask for a short time slice for the calling thread; False where not possible."""
    number = _SCHED_SETATTR.get(platform.machine())
    if os.name != "posix" or platform.system() != "Linux" or number is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        nice = os.getpriority(os.PRIO_PROCESS, 0)
        attr = _SchedAttr(
            ctypes.sizeof(_SchedAttr), 0, _RESET_ON_FORK, nice, 0, SHORT_SLICE_NS, 0, 0
        )
        return libc.syscall(number, 0, ctypes.byref(attr), 0) == 0
    except (OSError, AttributeError, ValueError):
        return False


def as_worker() -> None:
    """First thing in a worker process: a little nicer, and quick to wake."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)
    short_slice()
