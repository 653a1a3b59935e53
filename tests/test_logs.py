"""``pd logs``: the coordinator's lines are rendered from the event log (the run writes
each event once), merged in time order with the processes' own logs; a run an older pd
wrote, with a ``coordinator.log`` of its own, reads as it did."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import pd
from filelock import FileLock

from orchestrator.record import events as ev
from orchestrator.record import processlog
from orchestrator.record.eventtext import stamp
from orchestrator.record.store import RunStore


def a_run(home: Path) -> RunStore:
    store = RunStore.create(home, "run-1")
    store.append(ev.TaskAssigned(task="a", worker="w1", branch="pd/a", base="h0", attempt=1))
    store.append(ev.TaskStarted(task="a", worker="w1", attempt=1), sync=False)  # silent
    store.append(ev.TaskMerged(task="a", attempt=1, head="f00d" * 10))
    store.close()
    return store


def test_the_coordinator_lines_come_from_the_event_log_in_time_order(tmp_path: Path) -> None:
    store = a_run(tmp_path)
    at = [e.at for e in store.events()]
    store.log_path("w1").write_text(f"{stamp(at[0] - 1)} [w1] [a] a second before\n")
    env = {"PD_HOME": str(tmp_path)}

    out = pd("logs", cwd=tmp_path, env=env, check=True).stdout.splitlines()
    assert [line[9:] for line in out] == [
        "[w1] [a] a second before",
        "[coordinator] [a] w1 ▶ a (attempt 1)",
        "[coordinator] [a] merge ✓ a → f00df00df0 (0.0s)",
    ]
    assert not store.log_path("coordinator").exists()  # the run wrote no second copy
    alone = pd("logs", "--worker", "coordinator", cwd=tmp_path, env=env, check=True).stdout
    assert alone.splitlines() == out[1:]


def test_a_run_an_older_pd_wrote_shows_its_coordinator_log_once(tmp_path: Path) -> None:
    store = a_run(tmp_path)
    store.log_path("coordinator").write_text("12:00:00 [coordinator] [a] as it was written\n")

    out = pd("logs", cwd=tmp_path, env={"PD_HOME": str(tmp_path)}, check=True).stdout
    assert out.splitlines() == ["12:00:00 [coordinator] [a] as it was written"]


def test_follow_prints_events_recorded_after_it_started(tmp_path: Path) -> None:
    """``--follow`` goes on from where its first read ended (it once went on from the
    file's size a moment later, losing what was written in between); held open by a
    live coordinator (this process holds the run's lock), it ends once that lets go."""
    store = a_run(tmp_path)
    # More than a pipe holds: pd logs blocks printing it until this test reads, so the
    # event below is written after its read, before it could look at the file again.
    early = stamp(next(store.events()).at - 1)
    store.log_path("w1").write_text(f"{early} [w1] [a] {'x' * 60}\n" * 3000)
    lock = FileLock(store.lock_path)
    lock.acquire()
    follow = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "logs", "--follow", "-n", "0"],
        cwd=tmp_path,
        env={**os.environ, "PD_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert "[w1] [a] xxx" in follow.stdout.readline()  # it has read the logs
        live = RunStore(store.dir)
        live.append(ev.TaskAssigned(task="b", worker="w2", branch="pd/b", base="h0", attempt=1))
        live.close()
    finally:
        lock.release()
    rest, _ = follow.communicate(timeout=60)  # a hang guard: it ends on its own
    assert follow.returncode == 0 and "w2 ▶ b (attempt 1)" in rest


def local(day: int, hour: int, minute: int, second: int) -> float:
    return time.mktime((2026, 12, day, hour, minute, second, 0, 0, -1))


def test_a_log_line_is_timed_across_midnight_in_every_format_pd_wrote() -> None:
    start = local(2, 23, 58, 0)
    lines = [
        "23:59:58 [w1] [a] an older pd: the time of day alone",
        "00:00:01 [w1] [a] after midnight",
        f"{processlog.stamp(local(3, 0, 0, 2) + 0.25)} [w1] [a] this pd, to the millisecond",
        "2026-12-03 00:00:03 error merging a:",  # the merger of an older pd
        "Traceback (most recent call last):",  # goes with the line above
        "00:00:04 [w1] [a] still the 3rd",
    ]
    timed = processlog.timed(lines, start)
    assert [at - start for at, _ in timed] == [118, 121, 122.25, 123, 123, 124]
    assert [line for _, line in timed] == [
        "23:59:58 [w1] [a] an older pd: the time of day alone",
        "00:00:01 [w1] [a] after midnight",
        "00:00:02 [w1] [a] this pd, to the millisecond",
        "00:00:03 error merging a:",
        "Traceback (most recent call last):",
        "00:00:04 [w1] [a] still the 3rd",
    ]


def test_a_log_line_the_disk_refuses_is_lost_without_stopping_the_writer(
    tmp_path: Path,
) -> None:
    (tmp_path / "w1.log").mkdir()  # in the way of the log, as a full disk would be
    processlog.write(tmp_path / "w1.log", "w1", "a", "lost")
    processlog.write(tmp_path / "w2.log", "w2", "a", "kept")
    assert (tmp_path / "w2.log").read_text().endswith(" [w2] [a] kept\n")
