"""Scheduling hints: what a thread asks the OS for, and that it always gets its normal
policy back (the hints only ever apply to the thread that asked, for as long as it asks)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest

from orchestrator.system import oshints

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux only")


def in_thread(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a thread of its own, so a policy it sets dies with that thread."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def policy() -> int:
    return os.sched_getscheduler(0) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)


def test_an_urgent_wait_is_real_time_where_allowed_and_normal_again_after() -> None:
    def probe() -> tuple[int, int, int]:
        before = policy()
        with oshints.urgent():
            during = policy()
        return before, during, policy()

    before, during, after = in_thread(probe)  # type: ignore[misc]
    assert before == after == os.SCHED_OTHER
    assert during in (os.SCHED_RR, os.SCHED_OTHER)  # RR where this user may have it
    if during == os.SCHED_RR:
        assert in_thread(oshints.quick) == "real-time"


def test_pd_realtime_0_keeps_every_thread_normal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(oshints.REALTIME_ENV, "0")

    def probe() -> tuple[int, str]:
        with oshints.urgent():
            during = policy()
        return during, oshints.quick()

    during, got = in_thread(probe)  # type: ignore[misc]
    assert during == os.SCHED_OTHER and got in ("short slice", "normal")
    assert policy() == os.SCHED_OTHER


def test_a_named_thread_shows_its_name_to_the_os() -> None:
    def probe() -> str:
        oshints.name_thread("pd-test-name-longer-than-15")
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as comm:
            return comm.read().strip()

    assert in_thread(probe) == "pd-test-name-lo"  # the kernel keeps 15 bytes
