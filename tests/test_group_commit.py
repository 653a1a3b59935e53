"""Group commit of the event log: one fsync per loop step, and no effect (a message to a
worker or the merger, a spawn, a kill) before the events that caused it are durable.

The store counts its fsyncs, makes them on a thread of its own (``record.syncer``) and
tells whether the calling thread's events are on disk; the pool holds each message until
its causes are, and refuses (``UnrecordedEffect``) a spawn or kill when a commit left
one of them unsynced. A real run shows both at work.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from orchestrator.cli.status import current
from orchestrator.engine.coordinator import Coordinator
from orchestrator.engine.pool import UnrecordedEffect, WorkerPool
from orchestrator.engine.preflight import RunPlan, build_plan
from orchestrator.errors import InfraError
from orchestrator.record import events as ev
from orchestrator.record.store import RunStore
from orchestrator.record.syncer import Syncer
from orchestrator.system.targetlock import live_run
from orchestrator.wire.messages import Progress
from tests import workers_for_tests as targets
from tests.conftest import finish_turn, write_mission, write_turn
from tests.test_pool import collect, wait_ready

# ---- the store -------------------------------------------------------------------------


def test_group_commit_makes_a_step_of_events_durable_with_one_fsync(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1").group_commit()
    for n in range(5):
        store.append_event("task_assigned", task=f"t{n}")
    assert store.fsyncs == 0 and not store.durable()

    store.commit()

    assert store.fsyncs == 1 and store.durable()
    store.commit()  # nothing new: no fsync
    assert store.fsyncs == 1


def test_without_group_commit_each_synced_event_is_durable_at_once(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1")
    store.append_event("a")
    store.append_event("b")
    assert store.fsyncs == 2 and store.durable()


def test_informational_events_wait_for_the_step_not_for_an_effect(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1").group_commit()
    store.append_event("task_started", sync=False)
    store.commit()  # no event an effect depends on: no fsync
    assert store.fsyncs == 0 and store.durable()
    store.sync()
    assert store.fsyncs == 1


def test_durable_is_about_the_calling_threads_events(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1").group_commit()
    other = threading.Thread(target=lambda: store.append_event("usage"))
    other.start()
    other.join()
    assert store.durable()  # this thread appended nothing it could act on
    store.append_event("task_assigned")
    assert not store.durable()


# ---- the pool's barrier ----------------------------------------------------------------


class ForgetfulStore(RunStore):
    """A barrier that does nothing: what removing the pool's commit would amount to."""

    def commit(self) -> None:
        pass

    def commit_soon(self) -> None:
        pass


@contextmanager
def echo_pool(store: RunStore) -> Iterator[WorkerPool]:
    """A pool with ``store`` as its record and one echoing worker, w1, up."""
    pool = WorkerPool("spawn", record=store)
    try:
        pool.spawn("w1", targets.echo)
        wait_ready(pool, "w1")
        yield pool
    finally:
        RunStore.commit(store)  # a forgetful store's events too, so the shutdown passes
        pool.shutdown_all(grace=2)


def test_a_message_waits_for_the_commit_of_its_cause(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "run-1").group_commit()
    with echo_pool(store) as pool:
        for n in range(3):
            store.append_event("task_assigned", task=f"t{n}")
            pool.send("w1", Progress("w1", f"t{n}", "go"))
        assert store.fsyncs == 0 and not store.durable()  # the messages wait with them
        echoed = collect(pool, lambda ev: len(ev) >= 3)
        assert [e.message.task_id for e in echoed] == ["t0", "t1", "t2"]  # type: ignore[union-attr]
        assert store.fsyncs == 1 and store.durable()  # one fsync for the three


def test_a_message_is_held_until_its_cause_is_on_disk(tmp_path: Path) -> None:
    store = ForgetfulStore.create(tmp_path, "run-1").group_commit()
    with echo_pool(store) as pool:
        store.append_event("task_assigned", task="t1")
        pool.send("w1", Progress("w1", "t1", "go"))
        assert pool.poll(0) == [] and pool.waiting == 1  # no commit: it stays
        RunStore.commit(store)
        echoed = collect(pool, lambda ev: len(ev) >= 1)
        assert echoed[0].message.task_id == "t1" and pool.waiting == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("effect", ["spawn", "kill"])
def test_an_effect_before_its_cause_is_durable_is_refused(tmp_path: Path, effect: str) -> None:
    store = ForgetfulStore.create(tmp_path, "run-1").group_commit()
    assert isinstance(store, ForgetfulStore)
    with echo_pool(store) as pool:
        store.append_event("task_assigned", task="t1")
        with pytest.raises(UnrecordedEffect):
            if effect == "spawn":
                pool.spawn("w2", targets.echo)
            else:
                pool.kill("w1")


# ---- the syncer thread -----------------------------------------------------------------


def test_the_syncer_makes_the_highest_asked_seq_durable_and_wakes_the_loop() -> None:
    gate, calls = threading.Event(), []

    def fsync(seq: int) -> None:
        gate.wait()  # the disk is slow until the test says otherwise
        calls.append(seq)

    syncer = Syncer(fsync)
    try:
        syncer.ask(3)
        syncer.ask(7)  # while the first may still be at the disk
        assert syncer.done == 0
        gate.set()
        syncer.wait(7)
        assert syncer.done == 7 and calls[-1] == 7 and len(calls) <= 2
        assert select.select([syncer.wakeup_fd], [], [], None)[0]  # the loop hears of it
        syncer.take_wakeups()
        assert not select.select([syncer.wakeup_fd], [], [], 0)[0]
    finally:
        syncer.stop()


def test_a_failed_fsync_is_raised_to_whoever_asks_next() -> None:
    def fsync(seq: int) -> None:
        raise OSError(28, "No space left on device")

    syncer = Syncer(fsync)
    try:
        with pytest.raises(InfraError, match="could not make the event log durable"):
            syncer.wait(1)
        with pytest.raises(InfraError, match="No space left"):
            syncer.ask(2)
    finally:
        syncer.stop()


# ---- a real run ------------------------------------------------------------------------


def planned_run(
    tmp_path: Path, project: Path, tasks: list[dict], cassette: dict, **fields: Any
) -> tuple[RunPlan, RunStore]:
    """A mission of ``tasks`` on ``project``, planned, and its run store: not started."""
    home = tmp_path / "pd-home"
    mission = write_mission(home, tasks, cassette, **fields)
    return build_plan(mission, home, repo_arg=str(project)), RunStore.create(home)


def assert_let_go(plan: RunPlan, store: RunStore, threads: set[threading.Thread]) -> None:
    """The branch and the run are free for `pd resume`, and no thread of the run is left
    beside ``threads`` (those alive before it)."""
    assert live_run(plan.repo, plan.target_branch) is None
    FileLock(store.lock_path).acquire(timeout=0)
    assert set(threading.enumerate()) <= threads


def run_here(run: Coordinator) -> int:
    """Run a coordinator in the test process, then undo what it sets process-wide."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    interval = sys.getswitchinterval()
    try:
        return run.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        sys.setswitchinterval(interval)


def test_a_real_run_commits_in_groups_and_every_effect_follows_its_cause(
    tmp_path: Path, project: Path
) -> None:
    tasks = [{"id": f"t{n}", "title": f"task {n}", "deps": ["t0"] if n else []} for n in range(6)]
    cassette = {
        t["id"]: [[write_turn(f"{t['id']}.txt", "x\n"), finish_turn(t["id"])]] for t in tasks
    }
    plan, store = planned_run(
        tmp_path, project, tasks, cassette, team=[{"role": "backend-dev", "count": 3}]
    )
    run = Coordinator(plan, store)
    steps = 0  # turns of the loop
    turn = run._turn

    def counted() -> bool:
        nonlocal steps
        steps += 1
        return turn()

    run._turn = counted  # type: ignore[method-assign]

    assert run_here(run) == 0  # an effect before its cause is durable would raise

    events = list(store.events())
    kinds = [e.kind for e in events]
    assert kinds.count("task_merged") == 6
    # Every TaskJob and MergeBatch (and spawn, shutdown) passed the barrier ...
    batches = {e.batch for e in events if isinstance(e, ev.BatchStarted)}  # one send each
    assert run.pool.effects >= kinds.count("task_assigned") + len(batches)
    # ... and the events went in groups: one fsync per turn of the loop at most (each
    # turn asks once, before it waits), however many events the turn recorded.
    assert store.fsyncs <= steps + 3 and store.fsyncs < len(events)
    state = json.loads((store.dir / "state.json").read_text())
    assert {t["id"]: t["state"] for t in state["tasks"]} == {t["id"]: "merged" for t in tasks}


def _read_states(path: Path, stop: threading.Event, seen: list[Any]) -> None:
    while not stop.is_set():
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        seen.append(json.loads(text))  # a partial file would not parse
        time.sleep(0.005)  # leave the run some CPU


def test_state_json_is_never_partial_and_ends_with_every_tasks_latest_state(
    tmp_path: Path, project: Path
) -> None:
    tasks = [{"id": f"t{n}", "title": f"task {n}"} for n in range(8)]
    cassette = {t["id"]: [[write_turn(f"{t['id']}.txt", "x\n"), finish_turn()]] for t in tasks}
    cassette["t3"] = [[write_turn("t3.txt", "BROKEN\n"), finish_turn()]]  # the gate fails it
    plan, store = planned_run(tmp_path, project, tasks, cassette, max_attempts=1)
    stop, seen = threading.Event(), []
    reader = threading.Thread(target=_read_states, args=(store.dir / "state.json", stop, seen))
    reader.start()
    try:
        code = run_here(Coordinator(plan, store))
    finally:
        stop.set()
        reader.join()

    assert code == 1
    final = json.loads((store.dir / "state.json").read_text())
    latest: dict[str, str] = {}
    for event in store.events():  # each task's last state, as the event log says
        if isinstance(event, ev.TaskMerged):
            latest[event.task] = "merged"
        elif isinstance(event, ev.TaskAlreadyMerged):
            latest[event.task] = "already-merged"
        elif isinstance(event, ev.TaskFailed):
            latest[event.task] = "failed"
    assert {t["id"]: t["state"] for t in final["tasks"]} == latest
    assert final["counts"]["failed"] == 1 and final["status"] == "failed"
    assert seen and all(isinstance(s.get("tasks"), list) for s in seen)


# ---- a disk that fails -----------------------------------------------------------------


@contextmanager
def failing_event_log(after: int = 0) -> Iterator[list[int]]:
    """fsync of any ``events.jsonl`` succeeds ``after`` times, then fails as a full disk
    does; other files' fsyncs go through. Yields the count of failed calls."""
    real, failed, passed = os.fsync, [0], [0]

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("events.jsonl"):
            if passed[0] >= after:
                failed[0] += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            passed[0] += 1
        real(fd)

    os.fsync = fsync  # type: ignore[assignment]
    try:
        yield failed
    finally:
        os.fsync = real


def test_closing_a_store_whose_disk_failed_lets_go_of_its_thread_and_file(
    tmp_path: Path,
) -> None:
    before = set(threading.enumerate())
    store = RunStore.create(tmp_path).group_commit()
    with failing_event_log():
        store.append(ev.RunStalled(reason="one"))
        with pytest.raises(InfraError, match="No space left"):
            store.commit()
        with pytest.raises(InfraError, match="could not make the event log durable"):
            store.close()  # the events are not durable: the caller must hear it ...
    # ... and the fsync thread and the file are gone all the same
    assert set(threading.enumerate()) <= before
    assert store._events_handle is None
    store.close()  # once is enough


def test_without_group_commit_a_failed_fsync_is_an_infra_error(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path)
    with failing_event_log(), pytest.raises(InfraError, match="free space or fix the disk"):
        store.append(ev.RunStalled(reason="one"))
    store.close()


@pytest.mark.parametrize("after", [0, 3], ids=["at-start", "with-workers-up"])
def test_a_run_whose_disk_fails_stops_and_lets_go_of_everything(
    tmp_path: Path, project: Path, after: int
) -> None:
    tasks = [{"id": f"t{n}", "title": f"task {n}"} for n in range(4)]
    cassette = {t["id"]: [[write_turn(f"{t['id']}.txt", "x\n"), finish_turn()]] for t in tasks}
    plan, store = planned_run(
        tmp_path, project, tasks, cassette, team=[{"role": "backend-dev", "count": 2}]
    )
    before = set(threading.enumerate())
    run = Coordinator(plan, store)
    spawned: list[Any] = []  # every child the run started
    spawn = run.pool.spawn

    def noted(*args: Any, **kwargs: Any) -> Any:
        spawned.append(spawn(*args, **kwargs))
        return spawned[-1]

    run.pool.spawn = noted  # type: ignore[method-assign]
    with failing_event_log(after) as failed, pytest.raises(InfraError, match="No space left"):
        run_here(run)
    assert failed[0] >= 1 and len(spawned) == (3 if after else 0)
    # `pd status` says what broke and what to do (the snapshot is not fsync'd: it was
    # written), not "crashed".
    shown = current(store)
    assert shown["status"] == "broken" and "then `pd resume`" in shown["hint"]
    # Every child is gone, and the branch and the run are free for `pd resume`.
    assert not [h.id for h in spawned if h.process.is_alive()]
    assert_let_go(plan, store, before)


def test_a_system_error_in_the_loop_stops_the_run_with_what_to_do(
    tmp_path: Path, project: Path
) -> None:
    """Any OS error the loop meets (here the snapshot cannot replace ``state.json``: a
    directory is in its way) ends the run as one line saying what to do, not a
    traceback, with every process stopped and the branch and run free."""
    tasks = [{"id": "t1", "title": "task 1"}]
    cassette = {"t1": [[write_turn("t1.txt", "x\n"), finish_turn()]]}
    plan, store = planned_run(tmp_path, project, tasks, cassette)
    (store.dir / "state.json" / "in-the-way").mkdir(parents=True)
    before = set(threading.enumerate())
    run = Coordinator(plan, store)
    with pytest.raises(InfraError, match=r"state\.json.*then `pd resume`"):
        run_here(run)
    assert not run.pool.workers  # every process stopped
    assert_let_go(plan, store, before)


REFUSED_WRITE = """
import resource, signal, sys
from pathlib import Path
from orchestrator.errors import InfraError
from orchestrator.record import events as ev
from orchestrator.record.store import RunStore

store = RunStore.create(Path(sys.argv[1])).group_commit()
store.append(ev.RunStalled(reason="x" * 100))
store.commit()
line = store.events_path.stat().st_size  # the one event's line
room = line + line + line // 2  # one more such line fits, not two
# From here the OS refuses writes past ``room`` bytes (EFBIG), as a full disk refuses
# them: a real failure of write(), in this process alone.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the default would kill the process
resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))
store.append(ev.RunStalled(reason="y" * 100))
store.append(ev.RunStalled(reason="z" * 100))
for step in (store.commit, store.close):
    try:
        step()
    except InfraError as error:
        print(error)
print(room)
"""


def test_a_write_the_disk_refuses_is_an_infra_error_and_the_log_reads_to_its_last_line(
    tmp_path: Path,
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", REFUSED_WRITE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    *errors, room = child.stdout.splitlines()
    assert len(errors) == 2  # the commit and the close, each pd's one line
    assert all("could not make the event log durable" in e for e in errors)
    assert all("free space or fix the disk" in e for e in errors)
    store = RunStore.open(None, tmp_path)
    assert store.events_path.stat().st_size == int(room)  # the third line was torn
    assert [e.reason[0] for e in store.events()] == ["x", "y"]  # type: ignore[attr-defined]
    again = RunStore(store.dir)  # appending again cuts the torn line first
    again.append(ev.RunStalled(reason="after"))
    again.close()
    assert [e.reason[0] for e in store.events()] == ["x", "y", "a"]  # type: ignore[attr-defined]
