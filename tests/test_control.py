"""Control requests as files, coordinator liveness through the lock, and killing only
the processes a snapshot recorded (never a reused PID)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import psutil
import pytest

from orchestrator.record.control import (
    ControlRequest,
    coordinator_alive,
    kill_recorded,
    same_process,
    send_request,
    take_requests,
)
from orchestrator.record.store import RunStore
from tests import workers_for_tests as targets


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore.create(tmp_path, "run-1")


# ---- requests --------------------------------------------------------------------


def test_requests_are_taken_in_order_and_only_once(store: RunStore) -> None:
    sent = [
        ControlRequest("abort", task="t1"),
        ControlRequest("abort", worker="w2"),
        ControlRequest("status"),
        ControlRequest("abort"),
    ]
    for request in sent:
        send_request(store, request)

    assert take_requests(store) == sent
    assert take_requests(store) == []
    assert list(store.control_dir.iterdir()) == []


def test_a_request_sent_from_another_process_is_taken(store: RunStore) -> None:
    code = (
        "import sys\n"
        "from orchestrator.record.control import ControlRequest, send_request\n"
        "from orchestrator.record.store import RunStore\n"
        "from pathlib import Path\n"
        "send_request(RunStore.open(sys.argv[1], home=Path(sys.argv[2])), "
        "ControlRequest('abort', task='t9'))\n"
    )
    home = store.dir.parent.parent.parent
    subprocess.run([sys.executable, "-c", code, store.run_id, str(home)], check=True)
    assert take_requests(store) == [ControlRequest("abort", task="t9")]


def test_malformed_requests_are_taken_as_refusals_not_dropped(store: RunStore) -> None:
    """Junk in the control folder never raises; each file comes back as a request whose
    ``problem`` the coordinator answers, so its sender learns why nothing happened."""
    bad = {
        "0-1-garbage.json": b"{not json",
        "0-2-list.json": b'["abort"]',
        "0-3-string.json": b'"abort"',
        "0-4-unknown-field.json": b'{"action": "abort", "signal": 9}',
        "0-5-no-action.json": b'{"task": "t1"}',
        "0-6-binary.json": b"\xff\xfe\x00abort",
        "0-7-empty.json": b"",
    }
    for name, raw in bad.items():
        (store.control_dir / name).write_bytes(raw)
    good = send_request(store, ControlRequest("abort", task="t1"))
    assert good.name > max(bad)  # sorts after the junk: taken after it

    taken = take_requests(store)
    assert taken[-1] == ControlRequest("abort", task="t1") and taken[-1].problem() is None
    assert [r.name for r in taken[:-1]] == [name.removesuffix(".json") for name in sorted(bad)]
    assert all(r.problem() for r in taken[:-1])
    assert list(store.control_dir.iterdir()) == []


# ---- coordinator liveness --------------------------------------------------------


@pytest.fixture
def lock_holder(store: RunStore) -> Iterator[tuple[BaseProcess, Connection]]:
    """Another process holding the run's coordinator lock, as a live coordinator does."""
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    holder = ctx.Process(
        target=targets.hold_lock,
        args=(theirs, "holder", str(store.lock_path)),
        daemon=True,
    )
    holder.start()
    theirs.close()
    try:
        assert mine.poll(30), "lock holder did not start"
        assert json.loads(json.loads(mine.recv_bytes())["text"]) == {"locked": True}
        yield holder, mine
    finally:
        if holder.is_alive():
            holder.kill()
        holder.join(5)


def test_no_lock_file_means_no_coordinator(store: RunStore) -> None:
    assert not store.lock_path.exists()
    assert coordinator_alive(store) is False


@pytest.mark.parametrize("ending", ["exits", "sigkill"])
def test_coordinator_alive_follows_the_lock_holder(
    store: RunStore, lock_holder: tuple[BaseProcess, Connection], ending: str
) -> None:
    holder, conn = lock_holder
    assert coordinator_alive(store) is True
    assert coordinator_alive(store) is True  # asking does not take the lock away

    if ending == "exits":
        conn.send_bytes(b"go")
    else:
        os.kill(holder.pid, signal.SIGKILL)
    holder.join(10)
    assert holder.exitcode == (0 if ending == "exits" else -signal.SIGKILL)

    assert coordinator_alive(store) is False


def test_asking_leaves_the_lock_free_for_the_next_coordinator(store: RunStore) -> None:
    store.lock_path.touch()
    assert coordinator_alive(store) is False
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    holder = ctx.Process(target=targets.hold_lock, args=(theirs, "next", str(store.lock_path)))
    holder.start()
    try:
        assert mine.poll(30), "lock holder did not start"
        assert json.loads(json.loads(mine.recv_bytes())["text"]) == {"locked": True}
    finally:
        holder.kill()
        holder.join(5)


# ---- recorded processes ----------------------------------------------------------


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Real processes to record and kill; whatever survives is cleaned up."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _sleeper(sleepers: list[subprocess.Popen[bytes]], code: str = "") -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code or "import time; time.sleep(60)"], stdout=subprocess.PIPE
    )
    sleepers.append(proc)
    return proc


def _ends(proc: psutil.Process, timeout: float) -> bool:
    """Dead, or a zombie nobody reaped yet (an orphan's new parent may never reap it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


def test_same_process_checks_the_create_time() -> None:
    me = psutil.Process()
    found = same_process(me.pid, me.create_time())
    assert found is not None
    assert found.pid == os.getpid()
    assert same_process(me.pid, me.create_time() + 1.0) is None
    assert same_process(me.pid, me.create_time() - 0.5) is None
    assert same_process(None, me.create_time()) is None
    assert same_process(0, None) is None


def test_same_process_of_a_process_that_is_gone_is_none(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    proc = _sleeper(sleepers, "pass")
    created = psutil.Process(proc.pid).create_time()
    proc.wait(10)
    assert same_process(proc.pid, created) is None


def test_kill_recorded_kills_only_the_processes_that_are_still_the_recorded_ones(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    worker, stranger, merger = (_sleeper(sleepers) for _ in range(3))
    procs = {p.pid: psutil.Process(p.pid) for p in (worker, stranger, merger)}
    times = {pid: proc.create_time() for pid, proc in procs.items()}
    state = {
        "coordinator": {},
        "merger": {"pid": merger.pid, "create_time": times[merger.pid], "queue": []},
        "workers": [
            {"id": "w1", "pid": worker.pid, "create_time": times[worker.pid]},
            # the recorded process is gone and this PID now belongs to someone else
            {"id": "w2", "pid": stranger.pid, "create_time": times[stranger.pid] - 30},
            {"id": "w3", "pid": None, "create_time": None},
        ],
    }

    killed = kill_recorded(state)

    assert sorted(killed) == sorted([merger.pid, worker.pid])
    # kill_recorded waits for (and so reaps) what it killed: ask psutil, not Popen
    assert not procs[worker.pid].is_running()
    assert not procs[merger.pid].is_running()
    assert stranger.poll() is None, "a process that is not the recorded one was killed"


def test_kill_recorded_takes_the_recorded_process_children_along(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    parent = _sleeper(
        sleepers,
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n",
    )
    child = psutil.Process(int(parent.stdout.readline()))
    recorded = psutil.Process(parent.pid)
    try:
        state = {"workers": [{"pid": parent.pid, "create_time": recorded.create_time()}]}
        assert kill_recorded(state) == [parent.pid]
        assert not recorded.is_running()
        assert _ends(child, timeout=120.0), "the recorded process's child lives on"
    finally:
        if child.is_running():
            child.kill()


def test_kill_recorded_never_kills_a_pid_recorded_without_create_time(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    stranger = _sleeper(sleepers)
    state = {"workers": [{"id": "w1", "pid": stranger.pid, "create_time": None}]}
    killed = kill_recorded(state)
    assert stranger.poll() is None, "an unverified PID was killed"
    assert killed == []
