"""Benchmarks of pd's engine, each printed as a ratio against a baseline from the same run.

Run ``python bench/bench_engine.py [--quick]``. Nothing here asserts a speed: absolute
figures depend on the machine, so every figure is paired with a baseline measured on the
same machine, in the same run, and only the ratio is meant to be compared across runs.

1. no-op task throughput through ``WorkerPool`` vs ``ProcessPoolExecutor``;
2. ready-to-start latency (``waited`` of ``task_started``) of a real ``pd run`` vs the
   round trip of one message over a bare ``multiprocessing.Pipe``;
3. worktree hand-out (``WorktreeManager.prepare``) on a 20,000-file repository vs plain
   ``git worktree add``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import echo, pct, run_git, say

from orchestrator.engine.child import child_setup, serve
from orchestrator.engine.pool import WorkerPool
from orchestrator.system.worktrees import WorktreeManager
from orchestrator.wire.messages import Message, TaskDone, TaskJob

START_METHOD = "spawn"  # pd's default; the executor gets the same, so the race is fair


@dataclass
class Row:
    """One line of the summary table: a pd figure, its baseline and pd/baseline."""

    name: str
    pd: float
    baseline: float
    unit: str
    baseline_name: str

    @property
    def ratio(self) -> float:
        return self.pd / self.baseline if self.baseline else float("nan")


# ---- 1. no-op task throughput ------------------------------------------------------


def noop_worker(conn: Connection, worker_id: str) -> None:
    """A pool worker that answers every TaskJob at once: only the engine's cost remains."""
    child_setup()

    def done(message: Message) -> Message | None:
        if not isinstance(message, TaskJob):
            return None
        return TaskDone(
            worker_id=worker_id,
            task_id=message.task_id,
            attempt=message.attempt,
            branch=message.branch,
            commit="0" * 40,
            summary="noop",
        )

    serve(conn, done)


def noop_call(i: int) -> int:
    """The executor's no-op task."""
    return i


def _sleepy_call(seconds: float) -> None:
    """Warm-up task that keeps a process busy, so the executor starts all its workers."""
    time.sleep(seconds)


def _assign(n: int) -> TaskJob:
    return TaskJob(
        task_id=f"t{n}",
        attempt=1,
        title="noop",
        description="",
        branch=f"pd/bench/t{n}",
        target_head="0" * 40,
    )


def pool_throughput(tasks: int, workers: int) -> float:
    """Tasks/s through WorkerPool, every worker kept busy with one task at a time."""
    pool = WorkerPool(START_METHOD)
    ids = [f"w{i}" for i in range(1, workers + 1)]
    try:
        for wid in ids:
            pool.spawn(wid, noop_worker)
        for wid in ids:  # warm-up: the first reply proves the process is up
            pool.send(wid, _assign(-1))
        _collect(pool, len(ids))
        sent = done = 0
        start = time.perf_counter()
        for wid in ids:
            if sent < tasks:
                pool.send(wid, _assign(sent))
                sent += 1
        while done < tasks:
            for event in pool.poll(5.0):
                if event.died:
                    raise RuntimeError(f"bench worker {event.worker_id} died")
                if isinstance(event.message, TaskDone):
                    done += 1
                    if sent < tasks:
                        pool.send(event.worker_id, _assign(sent))
                        sent += 1
        elapsed = time.perf_counter() - start
    finally:
        pool.shutdown_all()
    return tasks / elapsed


def _collect(pool: WorkerPool, replies: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    got = 0
    while got < replies:
        if time.monotonic() > deadline:
            raise RuntimeError("bench workers did not answer the warm-up")
        for event in pool.poll(1.0):
            if event.died:
                raise RuntimeError(f"bench worker {event.worker_id} died during warm-up")
            got += 1


def executor_throughput(tasks: int, workers: int) -> float:
    """Tasks/s of the same no-op through ProcessPoolExecutor: submit all, wait."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(START_METHOD)) as ex:
        # Warm-up: busy tasks force every worker process to start, then one no-op batch.
        wait([ex.submit(_sleepy_call, 0.2) for _ in range(workers)])
        wait([ex.submit(noop_call, i) for i in range(workers * 10)])
        start = time.perf_counter()
        futures = [ex.submit(noop_call, i) for i in range(tasks)]
        wait(futures)
        elapsed = time.perf_counter() - start
    return tasks / elapsed


def bench_throughput(tasks: int, workers: int, repeats: int) -> Row:
    """Best of ``repeats`` for each side: the least disturbed run on a shared machine."""
    say(f"[1] no-op throughput: {tasks} tasks, {workers} workers, best of {repeats}")
    pd_rates, ex_rates = [], []
    for _ in range(repeats):  # interleaved, so a noisy moment hurts both sides alike
        pd_rates.append(pool_throughput(tasks, workers))
        ex_rates.append(executor_throughput(tasks, workers))
    say(f"    pd pool   {', '.join(f'{r:,.0f}' for r in pd_rates)} tasks/s")
    say(f"    executor  {', '.join(f'{r:,.0f}' for r in ex_rates)} tasks/s")
    return Row("no-op throughput", max(pd_rates), max(ex_rates), "tasks/s", "ProcessPoolExecutor")


# ---- 2. ready-to-start latency ------------------------------------------------------


def pipe_round_trip(trips: int) -> float:
    """Median seconds for one TaskJob-sized message there and back over a bare Pipe."""
    ctx = mp.get_context(START_METHOD)
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=echo, args=(child,), daemon=True)
    proc.start()
    child.close()
    payload = _assign(0).to_bytes()
    times = []
    try:
        for i in range(trips + 20):
            start = time.perf_counter()
            parent.send_bytes(payload)
            parent.recv_bytes()
            if i >= 20:  # the first trips pay for the child's start-up
                times.append(time.perf_counter() - start)
        parent.send_bytes(b"")
    finally:
        proc.join(2)
        if proc.is_alive():
            proc.kill()
        parent.close()
    return statistics.median(times)


def mission_tasks(count: int) -> list[dict[str, Any]]:
    """A root, a fan-out into chains, a join, and independent tasks: ``count`` in all."""
    tasks: list[dict[str, Any]] = [{"id": "root", "title": "root", "deps": []}]
    chains, length = 4, max(1, (count - 6) // 4)
    ends = []
    for c in range(chains):
        prev = "root"
        for k in range(length):
            tid = f"c{c}-{k}"
            tasks.append({"id": tid, "title": tid, "deps": [prev]})
            prev = tid
        ends.append(prev)
    tasks.append({"id": "join", "title": "join", "deps": ends})
    n = 0
    while len(tasks) < count:
        tasks.append({"id": f"free{n}", "title": f"free{n}", "deps": []})
        n += 1
    for task in tasks:
        task["role"] = "backend-dev"
    return tasks


def make_small_repo(path: Path) -> str:
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("bench\n")
    run_git(path, "add", "-A")
    run_git(path, "-c", "commit.gpgsign=false", "commit", "-q", "-m", "first")
    return run_git(path, "rev-parse", "HEAD")


def bench_latency(tmp: Path, tasks: int, trips: int) -> tuple[Row, dict[str, float]]:
    """Run a no-op mission through the real CLI and read ``waited`` from its events."""
    say(f"[2] ready-to-start latency: pd run, {tasks} no-op tasks on 3 workers")
    home, repo = tmp / "home", tmp / "repo"
    home.mkdir(parents=True)
    make_small_repo(repo)
    cassette = {
        "version": 1,
        "tasks": {"*": [[{"tool_calls": [{"name": "finish", "input": {"summary": "noop"}}]}]]},
    }
    (home / "noop.cassette.json").write_text(json.dumps(cassette))
    mission = {
        "name": "bench-noop",
        "test_command": "true",
        "team": [{"role": "backend-dev", "count": 3}],
        "tasks": mission_tasks(tasks),
        "provider": {"name": "scripted", "cassette": "noop.cassette.json"},
    }
    mission_path = home / "mission.json"
    mission_path.write_text(json.dumps(mission, indent=1))
    command = [sys.executable, "-m", "orchestrator", "run", str(mission_path)]
    command += ["--repo", str(repo), "--quiet"]
    start = time.perf_counter()
    proc = subprocess.run(
        command, cwd=tmp, env={**os.environ, "PD_HOME": str(home)}, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"pd run exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    runs = sorted((home / ".pd" / "runs").iterdir())
    events = [json.loads(line) for line in (runs[-1] / "events.jsonl").read_text().splitlines()]
    waited = [e["waited"] for e in events if e["kind"] == "task_started"]
    merged = sum(e["kind"] == "task_merged" for e in events)
    if merged != tasks or len(waited) != tasks:
        raise RuntimeError(f"expected {tasks} merged/started tasks, got {merged}/{len(waited)}")
    rtt = pipe_round_trip(trips)
    extra = {
        "waited_p90": pct(waited, 0.9),
        "merge_to_start_median": statistics.median(_merge_to_start(events, mission["tasks"])),
        "merge_to_start_p90": pct(_merge_to_start(events, mission["tasks"]), 0.9),
        "wall": wall,
        "run_seconds": events[-1]["at"] - events[0]["at"],
    }
    median = statistics.median(waited)
    say(
        f"    waited: median {median * 1e3:.2f} ms, p90 {extra['waited_p90'] * 1e3:.2f} ms "
        f"({len(waited)} tasks); run {extra['run_seconds']:.1f} s, pd process {wall:.1f} s"
    )
    say(
        f"    last dependency merged -> task_started (coordinator clock): median "
        f"{extra['merge_to_start_median'] * 1e3:.2f} ms, p90 "
        f"{extra['merge_to_start_p90'] * 1e3:.2f} ms"
    )
    dispatch = [e["dispatch"] for e in events if e["kind"] == "task_started"]
    extra["dispatch_median"] = statistics.median(dispatch)
    say(
        f"    TaskJob sent -> worker started (dispatch only, no queueing): median "
        f"{extra['dispatch_median'] * 1e3:.2f} ms, p90 {pct(dispatch, 0.9) * 1e3:.2f} ms"
    )
    say(f"    bare Pipe round trip: median {rtt * 1e6:.0f} us over {trips} trips")
    return Row("ready->start (median)", median, rtt, "s", "bare Pipe round trip"), extra


def _merge_to_start(events: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> list[float]:
    """For tasks with deps: coordinator time from the last dep's merge to ``task_started``.

    Uses event wall-clock stamps: a cross-check of ``waited``, which (monotonic clock)
    also counts the time a ready task spends queued behind busy workers.
    """
    merged = {e["task"]: e["at"] for e in events if e["kind"] == "task_merged"}
    started = {e["task"]: e["at"] for e in events if e["kind"] == "task_started"}
    return [started[t["id"]] - max(merged[d] for d in t["deps"]) for t in tasks if t["deps"]]


# ---- 3. worktree hand-out -----------------------------------------------------------


def make_big_repo(path: Path, folders: int, per_folder: int) -> str:
    """One commit of ``folders * per_folder`` small files, written by git fast-import."""
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    parts = [
        b"commit refs/heads/main\ncommitter bench <bench@localhost> 1700000000 +0000\n"
        b"data 4\ninit\n"
    ]
    for d in range(folders):
        for f in range(per_folder):
            body = f"folder {d} file {f}\n".encode()
            parts.append(
                b"M 100644 inline d%03d/f%03d.txt\ndata %d\n%s\n" % (d, f, len(body), body)
            )
    run_git(path, "fast-import", "--quiet", stdin=b"".join(parts))
    return run_git(path, "rev-parse", "refs/heads/main")


def touch_commit(repo: Path, parent: str, round_: int, files: int = 5) -> str:
    """A child of ``parent`` that changes a few files: what a reused worktree moves over."""
    stream = [
        b"commit refs/heads/main\ncommitter bench <bench@localhost> 1700000001 +0000\n"
        b"data 6\ntouch\nfrom %s\n" % parent.encode()
    ]
    for f in range(files):
        body = f"changed in round {round_}\n".encode()
        stream.append(b"M 100644 inline d%03d/f000.txt\ndata %d\n%s\n" % (f, len(body), body))
    run_git(repo, "fast-import", "--quiet", "--force", stdin=b"".join(stream))
    return run_git(repo, "rev-parse", "refs/heads/main")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def checkout_and_clean(path: Path, base: str, branch: str) -> None:
    """The git work of a reuse alone, none of pd's bookkeeping: the floor for ``prepare``."""
    run_git(path, "checkout", "-q", "--force", "-B", branch, base)
    run_git(path, "clean", "-ffdq")


def default_worktree_dir() -> Path | None:
    """RAM-backed /dev/shm when usable: on a shared VM disk one 20,000-file checkout took
    anywhere from 1 to 22 s, which drowns pd's overhead and blows the time budget."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def bench_worktrees(tmp: Path, folders: int, per_folder: int, repeats: int) -> list[Row]:
    """Median seconds of fresh and reused ``prepare`` vs plain ``git worktree add``.

    Plain and pd runs alternate, so a busy moment on a shared machine hits both alike.
    """
    files = folders * per_folder
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp)], capture_output=True, text=True)
    say(
        f"[3] worktree hand-out: {files:,} files, median of {repeats}, in {tmp} "
        f"({fs.stdout.strip() or '?'})"
    )
    repo, root = tmp / "big", tmp / "wt"
    start = time.perf_counter()
    head = make_big_repo(repo, folders, per_folder)
    say(f"    repository generated in {time.perf_counter() - start:.1f} s")

    def plain_add(*extra: str) -> float:
        path = tmp / "plain"
        seconds = timed(lambda: run_git(repo, "worktree", "add", "-q", *extra, str(path), head))
        run_git(repo, "worktree", "remove", "--force", str(path))
        return seconds

    manager = WorktreeManager(repo, root)
    plain, one_step, fresh, reused, floor = [], [], [], [], []
    try:
        for i in range(repeats):
            plain.append(plain_add("--detach"))
            one_step.append(plain_add("-B", f"pd/bench/o{i}"))
            if i:
                manager.remove_all()
            fresh.append(timed(lambda: manager.prepare("t1", base=head, branch="pd/bench/t1")))
        # Reuse: worktree t1 stays; each round a new base (a few files changed) and a new
        # branch, as when a worker takes its next task after a merge.
        path, base = manager.path_for("t1"), head
        for i in range(repeats):
            base = touch_commit(repo, base, 2 * i)
            reused.append(timed(partial(manager.prepare, "t1", base, f"pd/bench/r{i}")))
            base = touch_commit(repo, base, 2 * i + 1)
            floor.append(timed(partial(checkout_and_clean, path, base, f"pd/bench/f{i}")))
    finally:
        manager.remove_all()
    med = statistics.median

    def line(label: str, values: list[float]) -> None:
        say(f"    {label:<46} {med(values):7.3f} s  ({', '.join(f'{t:.3f}' for t in values)})")

    line("git worktree add --detach (baseline)", plain)
    line("git worktree add -B (one checkout, reference)", one_step)
    line("prepare, fresh", fresh)
    line("prepare, reused (new base + branch)", reused)
    line("git checkout -f -B + git clean (reuse floor)", floor)
    return [
        Row("worktree fresh", med(fresh), med(plain), "s", "git worktree add --detach"),
        Row("worktree fresh", med(fresh), med(one_step), "s", "git worktree add -B"),
        Row("worktree reused", med(reused), med(plain), "s", "git worktree add --detach"),
        Row("worktree reused", med(reused), med(floor), "s", "bare checkout + clean"),
    ]


# ---- summary ------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:,.1f} us"
        return f"{value * 1e3:,.2f} ms" if value < 1 else f"{value:,.3f} s"
    return f"{value:,.0f} {unit}"


def print_table(rows: list[Row]) -> None:
    header = ("figure", "pd", "baseline", "", "pd/baseline")
    body = [
        (r.name, fmt(r.pd, r.unit), fmt(r.baseline, r.unit), r.baseline_name, f"{r.ratio:.3g}x")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    say()
    say("summary (ratio = pd / baseline measured in this run)")
    for line in [header, *body]:
        cells = [
            c.ljust(w) if i in (0, 3) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        say("  " + "  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 60 s)")
    parser.add_argument("--workers", type=int, default=4, help="workers for figure 1")
    parser.add_argument(
        "--worktree-dir",
        type=Path,
        default=default_worktree_dir(),
        help="parent of figure 3's temp dir (default: /dev/shm if writable)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    began = time.perf_counter()
    say(
        f"pd engine bench ({'quick' if quick else 'full'}); python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, {run_git(Path.cwd(), 'version')}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rows: list[Row] = []
    rows.append(bench_throughput(300 if quick else 2000, args.workers, 3))
    with tempfile.TemporaryDirectory(prefix="pd-bench-") as raw:
        row, _extra = bench_latency(Path(raw), tasks=30, trips=300 if quick else 2000)
        rows.append(row)
    with tempfile.TemporaryDirectory(prefix="pd-bench-", dir=args.worktree_dir) as raw:
        rows += bench_worktrees(Path(raw), 200, 100, repeats=3 if quick else 5)
    print_table(rows)
    say(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
