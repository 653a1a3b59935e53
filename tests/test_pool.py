"""WorkerPool with real spawned processes and real pipes: messages, deaths, restarts,
heartbeats, shutdown, and what ``child_setup`` does to a child."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from orchestrator.engine.pool import PoolEvent, WorkerPool
from orchestrator.wire.messages import Heartbeat, Progress, Ready
from tests import workers_for_tests as targets


@pytest.fixture(params=["spawn", "forkserver"])
def pool(request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    """Both ways pd starts workers: a forkserver's children have it as their parent."""
    pool = WorkerPool(request.param, preload=["tests.workers_for_tests"])
    try:
        yield pool
    finally:
        pool.shutdown_all(grace=0.5)


def collect(
    pool: WorkerPool, done: Callable[[list[PoolEvent]], bool], timeout: float = 120.0
) -> list[PoolEvent]:
    """Poll until ``done(events so far)``; the timeout only ends a test that would hang."""
    events: list[PoolEvent] = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; events so far: {events}"
        events.extend(pool.poll(min(left, 0.5)))
    return events


def readies(events: list[PoolEvent]) -> dict[str, Ready]:
    return {e.worker_id: e.message for e in events if isinstance(e.message, Ready)}


def deaths(events: list[PoolEvent]) -> dict[str, PoolEvent]:
    return {e.worker_id: e for e in events if e.died}


def data(event: PoolEvent) -> dict:
    assert isinstance(event.message, Progress), event
    return json.loads(event.message.text)


def wait_ready(pool: WorkerPool, *worker_ids: str) -> dict[str, Ready]:
    events = collect(pool, lambda ev: set(worker_ids) <= set(readies(ev)))
    assert not deaths(events), events
    return readies(events)


def gone(pid: int, create_time: float) -> bool:
    """The process is dead or a zombie (reused PIDs are not it)."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() != create_time or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, create_time: float, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid, create_time):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_if_alive(pid: int, create_time: float) -> None:
    if not gone(pid, create_time):
        os.kill(pid, signal.SIGKILL)


def test_spawned_workers_answer_each_on_their_own_pipe(pool: WorkerPool) -> None:
    ids = ["w1", "w2", "w3"]
    for worker_id in ids:
        pool.spawn(worker_id, targets.echo)
    ready = wait_ready(pool, *ids)
    assert {w: r.pid for w, r in ready.items()} == {w: pool.workers[w].pid for w in ids}
    assert pool.active_count() == 3

    for worker_id in ids:
        for n in range(3):
            assert pool.send(worker_id, Progress(worker_id, "t", f"{worker_id}-{n}"))
    events = collect(pool, lambda ev: len(ev) == 9)
    for worker_id in ids:
        texts = [e.message.text for e in events if e.worker_id == worker_id]
        assert texts == [f"{worker_id}-{n}" for n in range(3)]
    status = pool.status("w2")
    assert status["alive"] is True
    assert status["pid"] == ready["w2"].pid
    assert status["exitcode"] is None


def test_spawn_refuses_a_taken_slot(pool: WorkerPool) -> None:
    pool.spawn("w1", targets.echo)
    with pytest.raises(ValueError, match="already exists"):
        pool.spawn("w1", targets.echo)
    assert pool.active_count() == 1


def test_sigkilled_worker_is_reported_dead_at_once_through_its_sentinel(
    pool: WorkerPool,
) -> None:
    pool.spawn("victim", targets.echo)
    pool.spawn("bystander", targets.echo)
    ready = wait_ready(pool, "victim", "bystander")

    os.kill(ready["victim"].pid, signal.SIGKILL)
    events = collect(pool, lambda ev: "victim" in deaths(ev))
    assert deaths(events)["victim"].exitcode == -signal.SIGKILL
    assert "bystander" not in deaths(events)
    assert pool.active_count() == 1
    assert pool.send("victim", Progress("victim", "t", "x")) is False
    assert pool.status("victim")["alive"] is False


def test_messages_sent_just_before_exit_arrive_before_the_death(pool: WorkerPool) -> None:
    handle = pool.spawn("w1", targets.last_words, 40, 3)
    handle.process.join(10)  # it has written everything and exited before we read
    assert handle.process.exitcode == 3

    events = collect(pool, lambda ev: "w1" in deaths(ev))
    assert [data(e)["n"] for e in events[:-1]] == list(range(40))
    assert events[-1].died
    assert events[-1].exitcode == 3
    assert pool.poll(0) == []  # the death is reported once


def test_poll_still_waits_after_a_reported_death(pool: WorkerPool) -> None:
    pool.spawn("w1", targets.last_words, 0, 0)
    pool.spawn("w2", targets.echo)
    collect(pool, lambda ev: "w1" in deaths(ev) and "w2" in readies(ev))

    started = time.monotonic()
    assert pool.poll(0.5) == []
    assert time.monotonic() - started >= 0.4


def test_restart_puts_a_new_process_in_the_same_slot(pool: WorkerPool) -> None:
    first = pool.spawn("w1", targets.echo)
    old_pid = wait_ready(pool, "w1")["w1"].pid

    second = pool.restart("w1")
    assert pool.workers["w1"] is second
    assert second.pid != old_pid
    assert second.restarts == 1
    assert first.process.exitcode == -signal.SIGKILL
    events = collect(pool, lambda ev: "w1" in readies(ev))
    assert readies(events)["w1"].pid == second.pid
    assert not deaths(events), "the replaced process must not be reported as a death"

    assert pool.restart("w1").restarts == 2
    wait_ready(pool, "w1")
    assert pool.status("w1")["restarts"] == 2
    assert pool.active_count() == 1


def test_remove_forgets_the_worker_and_stops_it(pool: WorkerPool) -> None:
    removed = pool.spawn("w1", targets.echo)
    pool.spawn("w2", targets.echo)
    wait_ready(pool, "w1", "w2")

    pool.remove("w1")
    assert "w1" not in pool.workers
    assert not removed.process.is_alive()
    assert pool.active_count() == 1
    assert pool.send("w1", Progress("w1", "t", "x")) is False
    with pytest.raises(KeyError):
        pool.status("w1")
    assert pool.send("w2", Progress("w2", "t", "still here"))
    events = collect(pool, lambda ev: len(ev) >= 1)
    assert [(e.worker_id, e.message.text) for e in events] == [("w2", "still here")]


def test_silent_reports_a_hung_worker_but_not_one_heartbeating_from_a_thread(
    pool: WorkerPool,
) -> None:
    pool.spawn("hung", targets.quiet)
    pool.spawn("busy", targets.heartbeat_while_blocked, 0.1)
    wait_ready(pool, "hung", "busy")
    for handle in pool.workers.values():
        handle.ready = True  # as the coordinator does on Ready

    beats = collect(pool, lambda ev: sum(isinstance(e.message, Heartbeat) for e in ev) >= 8)
    assert {e.worker_id for e in beats} == {"busy"}
    assert pool.silent(max_silence=0.5, boot_grace=60.0) == ["hung"]
    assert pool.status("hung")["silent_for"] > 0.5
    assert pool.silent(max_silence=0.5, boot_grace=60.0, now=time.monotonic() + 5) == [
        "hung",
        "busy",
    ]


def test_silent_gives_booting_workers_the_boot_grace(pool: WorkerPool) -> None:
    pool.spawn("hung", targets.quiet)
    wait_ready(pool, "hung")  # not marked ready: still booting for the pool
    later = time.monotonic() + 2.0
    assert pool.silent(max_silence=0.5, boot_grace=10.0, now=later) == []
    assert pool.silent(max_silence=0.5, boot_grace=1.0, now=later) == ["hung"]


def _children() -> set[int]:
    """Our live child processes, leaving out multiprocessing's own long-lived helpers
    (its resource tracker, and a forkserver the first forkserver pool starts)."""
    found = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue  # gone meanwhile
        server = "forkserver import main" in line and proc.ppid() == os.getpid()
        if "resource_tracker" not in line and not server:
            found.add(proc.pid)
    return found


def test_shutdown_all_ends_even_workers_that_ignore_shutdown(pool: WorkerPool) -> None:
    before = _children()
    handles = {
        "polite": pool.spawn("polite", targets.echo),
        "deaf": pool.spawn("deaf", targets.ignore_shutdown, False),
        "stubborn": pool.spawn("stubborn", targets.ignore_shutdown, True),
    }
    wait_ready(pool, *handles)
    assert _children() - before == {h.pid for h in handles.values()}

    pool.shutdown_all(grace=0.5)

    assert pool.active_count() == 0
    left = _children() - before
    assert left == set(), [" ".join(psutil.Process(p).cmdline())[:200] for p in left]
    assert handles["polite"].process.exitcode == 0
    assert handles["deaf"].process.exitcode == -signal.SIGTERM
    assert handles["stubborn"].process.exitcode == -signal.SIGKILL


def test_child_setup_makes_the_child_ignore_sigint(pool: WorkerPool) -> None:
    pool.spawn("guarded", targets.interruptible, True)
    pool.spawn("bare", targets.interruptible, False)
    ready = wait_ready(pool, "guarded", "bare")

    for worker_id in ("guarded", "bare"):
        os.kill(ready[worker_id].pid, signal.SIGINT)
    events = collect(pool, lambda ev: "bare" in deaths(ev))  # the control: SIGINT works
    assert deaths(events)["bare"].exitcode != 0

    assert pool.send("guarded", Progress("guarded", "t", "alive?"))
    events = collect(pool, lambda ev: len(ev) >= 1)
    assert [(e.worker_id, e.message.text) for e in events] == [("guarded", "alive?")]
    assert pool.status("guarded")["alive"] is True


def test_commands_run_by_workers_can_still_receive_sigint(pool: WorkerPool) -> None:
    pool.spawn("first", targets.run_command_catching_sigint)
    pool.spawn("second", targets.run_command_catching_sigint)
    events = collect(pool, lambda ev: sum(not e.died for e in ev) >= 2)
    assert {e.worker_id: data(e)["result"] for e in events if not e.died} == {
        "first": "caught",
        "second": "caught",
    }


def test_child_setup_makes_the_child_die_with_its_parent(pool: WorkerPool) -> None:
    pool.spawn("middle", targets.spawn_grandchild)
    events = collect(pool, lambda ev: len(ev) >= 1)
    grandchild = data(events[0])["grandchild"]
    created = psutil.Process(grandchild).create_time()
    try:
        assert not gone(grandchild, created)
        os.kill(pool.workers["middle"].pid, signal.SIGKILL)
        assert wait_gone(grandchild, created, timeout=120.0), "grandchild outlived its parent"
    finally:
        kill_if_alive(grandchild, created)


def test_child_setup_notices_a_parent_that_died_before_it_ran(pool: WorkerPool) -> None:
    pool.spawn("reaper", targets.subreaper_with_orphan)
    events = collect(pool, lambda ev: len(ev) >= 1)
    orphan = data(events[0])
    assert orphan["parent"] != orphan["first_parent"]  # its parent died before setup
    try:
        created = psutil.Process(orphan["pid"]).create_time()
    except psutil.NoSuchProcess:
        return  # already gone (and reaped by the subreaper), as it should be
    try:
        assert wait_gone(orphan["pid"], created, timeout=120.0), "orphan outlived its parent"
    finally:
        kill_if_alive(orphan["pid"], created)
