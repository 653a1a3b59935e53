"""The merger's SIGTERM: its running gates are killed and it leaves at once, except
inside ``held()``, where the target ref moves and the user's checkout is synced: both
happen or neither, and the signal is acted on when the block ends.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from orchestrator.system.procs import kill_all_running

_deferred: list[int] = []  # a SIGTERM that arrived inside a critical section
_critical = False


@contextmanager
def held() -> Iterator[None]:
    """Hold a SIGTERM until the block ends: moving the target ref and syncing the
    user's checkout happen both or neither."""
    global _critical
    _critical = True
    try:
        yield
    finally:
        _critical = False
        if _deferred:
            on_sigterm(_deferred[0], None)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Kill the running gates (their whole process groups) before leaving."""
    if _critical:
        _deferred.append(signum)
        return
    _gone.append(signum)  # before the kill: a killed gate's "failure" is never sent
    kill_all_running()
    sys.exit(128 + signum)


_gone: list[int] = []


def leaving() -> bool:
    """The merger is going (SIGTERM): gate threads send nothing more."""
    return bool(_gone)
