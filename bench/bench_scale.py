"""How the coordinator's cost grows with the graph, and what its durable log costs.

Run ``python bench/bench_scale.py [--quick]``. Like every bench here it asserts nothing:
each figure is the median of paired runs measured in the same process, printed next to
its goal, so a slow machine moves both sides of a pair alike.

1. cost per task at 800 tasks against 200 (a real ``pd run`` of no-op tasks, 16 workers,
   scripted provider, gate ``true``): (seconds/task at 800) / (seconds/task at 200);
2. merge -> start with 3,000 tasks waiting: a chain of no-op tasks runs while 3,000
   tasks wait behind a task that fails; the time from a link landing (merged, or already
   merged: a no-op changes nothing) to the next link's ``task_started`` (paired with the
   same chain and nothing waiting);
3. no-op throughput of the coordinator's own path (its loop, graph, durable event log,
   snapshot, pool and merge queue; workers and merger answer at once) against
   ``ProcessPoolExecutor`` with the same number of workers.
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
import threading
import time
from concurrent.futures import ProcessPoolExecutor, wait
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from _common import new_repo, run_git, say

from orchestrator.engine import coordinator as coordinator_module
from orchestrator.engine.child import child_setup
from orchestrator.system import oshints
from orchestrator.wire.messages import (
    BatchResult,
    Heartbeat,
    MergeBatch,
    Ready,
    Shutdown,
    TaskDone,
    TaskJob,
    TaskStarted,
    from_bytes,
)


def cassette(head: str) -> dict[str, Any]:
    """Every task finds its change already in the target (a no-op lands without a merge)."""
    noop = {"summary": "noop", "already_in_target": head}
    return {
        "version": 1,
        "tasks": {
            **NOOP_CASSETTE["tasks"],
            "*": [[{"tool_calls": [{"name": "finish", "input": noop}]}]],
        },
    }


NOOP_CASSETTE: dict[str, Any] = {
    "version": 1,
    "tasks": {
        # The wall fails its only attempt (the gate refuses BROKEN), blocking the waiters.
        "wall": [
            [
                {
                    "tool_calls": [
                        {"name": "write_file", "input": {"path": "BROKEN", "content": "x"}}
                    ]
                },
                {"tool_calls": [{"name": "finish", "input": {"summary": "broken"}}]},
            ]
        ],
    },
}
GATE = "test ! -e BROKEN"
# A no-op attempt changes nothing, so it lands as already merged; the merger sees the wall.
LANDED = ("task_merged", "task_already_merged")


def write_mission(home: Path, tasks: list[dict[str, Any]], workers: int, head: str) -> Path:
    (home / "noop.cassette.json").write_text(json.dumps(cassette(head)))
    for task in tasks:
        task.setdefault("role", "backend-dev")
    mission = {
        "name": "bench-scale",
        "test_command": GATE,
        "team": [{"role": "backend-dev", "count": workers}],
        "tasks": tasks,
        "provider": {"name": "scripted", "cassette": "noop.cassette.json"},
    }
    path = home / f"mission-{len(tasks)}.json"
    path.write_text(json.dumps(mission))
    return path


def pd_run(tmp: Path, tasks: list[dict[str, Any]], workers: int) -> tuple[list[dict], float]:
    """One real ``pd run --quiet``; its events and the coordinator's CPU seconds."""
    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
    repo = new_repo(home / "repo")
    mission = write_mission(home, tasks, workers, run_git(repo, "rev-parse", "HEAD"))
    command = [sys.executable, "-m", "orchestrator", "run", str(mission)]
    command += ["--repo", str(repo), "--quiet"]
    proc = subprocess.Popen(
        command,
        cwd=home,
        env={**os.environ, "PD_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    cpu = 0.0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:  # the last reading before it exits is its CPU time
        try:
            times = watched.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.1)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"pd run exited {proc.returncode}:\n{output}")
    run = next((home / ".pd" / "runs").iterdir())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return events, cpu


# ---- 1. cost per task -----------------------------------------------------------------


def flat_tasks(count: int) -> list[dict[str, Any]]:
    return [{"id": f"t{i}", "title": f"t{i}"} for i in range(count)]


def run_seconds(events: list[dict[str, Any]]) -> float:
    assigned = [e["at"] for e in events if e["kind"] == "task_assigned"]
    merged = [e["at"] for e in events if e["kind"] in LANDED]
    return max(merged) - min(assigned)


def bench_cost(tmp: Path, small: int, large: int, workers: int, pairs: int) -> dict[str, float]:
    say(f"[1] cost per task: pd run of {small} and {large} no-op tasks, {workers} workers")
    ratios, cpu_ratios = [], []
    for i in range(pairs):
        per_task, cpu_per_task = {}, {}
        for count in (small, large):
            events, cpu = pd_run(tmp, flat_tasks(count), workers)
            merged = sum(e["kind"] in LANDED for e in events)
            if merged != count:
                raise RuntimeError(f"{merged} of {count} tasks merged")
            per_task[count] = run_seconds(events) / count
            cpu_per_task[count] = cpu / count
            say(
                f"    pair {i + 1}: {count:>4} tasks  {run_seconds(events):7.1f} s "
                f"({per_task[count] * 1e3:6.1f} ms/task), coordinator CPU {cpu:6.1f} s "
                f"({cpu_per_task[count] * 1e3:6.1f} ms/task)"
            )
        ratios.append(per_task[large] / per_task[small])
        cpu_ratios.append(cpu_per_task[large] / cpu_per_task[small])
    return {"ratio": statistics.median(ratios), "cpu_ratio": statistics.median(cpu_ratios)}


# ---- 2. merge -> start with many tasks waiting ----------------------------------------


def chain_tasks(links: int, waiting: int) -> list[dict[str, Any]]:
    tasks = [
        {"id": f"c{k}", "title": f"c{k}", "deps": [f"c{k - 1}"] if k else []} for k in range(links)
    ]
    if waiting:
        tasks.append({"id": "wall", "title": "wall", "deps": [f"c{links - 1}"], "max_attempts": 1})
        tasks += [{"id": f"w{i}", "title": f"w{i}", "deps": ["wall"]} for i in range(waiting)]
    return tasks


def merge_to_start(events: list[dict[str, Any]], links: int) -> list[float]:
    merged = {e["task"]: e["at"] for e in events if e["kind"] in LANDED}
    started = {e["task"]: e["at"] for e in events if e["kind"] == "task_started"}
    return [started[f"c{k}"] - merged[f"c{k - 1}"] for k in range(1, links)]


def bench_latency(tmp: Path, links: int, waiting: int, workers: int, pairs: int) -> dict:
    say(f"[2] merge -> start: a chain of {links} no-op tasks, {waiting:,} tasks waiting")
    loaded, empty = [], []
    for i in range(pairs):
        with_waiting = merge_to_start(pd_run(tmp, chain_tasks(links, waiting), workers)[0], links)
        alone = merge_to_start(pd_run(tmp, chain_tasks(links, 0), workers)[0], links)
        loaded.append(statistics.median(with_waiting))
        empty.append(statistics.median(alone))
        say(
            f"    pair {i + 1}: {waiting:,} waiting {loaded[-1] * 1e3:7.1f} ms, "
            f"none waiting {empty[-1] * 1e3:7.1f} ms (median over the chain)"
        )
    return {"loaded": statistics.median(loaded), "empty": statistics.median(empty)}


# ---- 3. no-op throughput of the coordinator's path ------------------------------------


def _heartbeats(conn: Connection, worker_id: str, lock: threading.Lock) -> None:
    while True:
        time.sleep(0.5)
        with lock:
            try:
                conn.send_bytes(Heartbeat(worker_id=worker_id).to_bytes())
            except OSError:
                return


def _answer_loop(conn: Connection, worker_id: str, answer: Any) -> None:
    """Say Ready, keep heartbeats going, and send ``answer(message)``'s replies."""
    child_setup()
    lock = threading.Lock()
    conn.send_bytes(Ready(worker_id=worker_id, pid=os.getpid()).to_bytes())
    threading.Thread(target=_heartbeats, args=(conn, worker_id, lock), daemon=True).start()
    while True:
        try:
            message = from_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if isinstance(message, Shutdown):
            return
        with lock:
            for reply in answer(message):
                conn.send_bytes(reply.to_bytes())


def noop_worker(
    conn: Connection,
    worker_id: str,
    config: dict[str, Any],
    keys: dict[str, str] | None = None,
    side: Connection | None = None,
) -> None:
    """A worker that starts and finishes every TaskJob at once (no agent, no git),
    scheduled as a real worker is (``oshints.as_worker``: nicer than the coordinator)."""
    oshints.as_worker(worker_id)

    def answer(message: Any) -> list[Any]:
        if not isinstance(message, TaskJob):
            return []
        ids = {"worker_id": worker_id, "task_id": message.task_id, "attempt": message.attempt}
        done = TaskDone(**ids, branch=message.branch, commit=message.target_head, summary="")
        return [TaskStarted(**ids), done]

    _answer_loop(conn, worker_id, answer)


def noop_merger(conn: Connection, worker_id: str, config: dict[str, Any]) -> None:
    """A merger whose every batch lands at once on the same head."""

    def answer(message: Any) -> list[Any]:
        if not isinstance(message, MergeBatch):
            return []
        head = message.items[-1]["commit"]
        return [BatchResult(message.run_id, gated=True, passed=True, head=head)]

    _answer_loop(conn, worker_id, answer)


def coordinator_throughput(tmp: Path, tasks: int, workers: int) -> float:
    """Tasks/s of a run in this process, once its workers are up (``steady_rate``):
    16 processes importing pd take seconds of both cores, which the executor's
    warm-up leaves out of its figure too."""
    from orchestrator.engine.preflight import build_plan
    from orchestrator.record.store import RunStore

    home = Path(tempfile.mkdtemp(prefix="home-", dir=tmp))
    repo = new_repo(home / "repo")
    mission = write_mission(home, flat_tasks(tasks), workers, run_git(repo, "rev-parse", "HEAD"))
    plan = build_plan(mission, home, repo_arg=str(repo))
    store = RunStore.create(home)
    code = coordinator_module.Coordinator(plan, store, start_method="spawn").run()
    events = list(store.raw_events())
    if code != 0:
        raise RuntimeError(f"the no-op run exited {code}")
    return steady_rate(events)


def steady_rate(events: list[dict[str, Any]]) -> float:
    """Tasks/s once every process is up, as the executor's figure is taken: from the last
    ``worker_ready`` to the last landing, counting the tasks assigned in that window
    (those already out when it opens are left out, so the figure errs low)."""
    up = max(e["at"] for e in events if e["kind"] == "worker_ready")
    last = max(e["at"] for e in events if e["kind"] in LANDED)
    counted = sum(e["kind"] == "task_assigned" and e["at"] >= up for e in events)
    return counted / (last - up)


def noop_call(i: int) -> int:
    return i


def executor_throughput(tasks: int, workers: int) -> float:
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        wait([ex.submit(time.sleep, 0.2) for _ in range(workers)])  # every process up
        start = time.perf_counter()
        wait([ex.submit(noop_call, i) for i in range(tasks)])
        return tasks / (time.perf_counter() - start)


def bench_throughput(tmp: Path, tasks: int, workers: int, pairs: int) -> dict[str, float]:
    say(f"[3] no-op throughput: {tasks} tasks, {workers} workers, coordinator vs executor")
    # The coordinator's real loop, with workers and merger that answer at once.
    coordinator_module.worker_main = noop_worker  # type: ignore[assignment]
    coordinator_module._merger_entry = noop_merger  # type: ignore[assignment]
    ratios = []
    for i in range(pairs):
        pd_rate = coordinator_throughput(tmp, tasks, workers)
        ex_rate = executor_throughput(tasks, workers)
        ratios.append(pd_rate / ex_rate)
        say(
            f"    pair {i + 1}: coordinator {pd_rate:8,.0f} tasks/s, executor "
            f"{ex_rate:8,.0f} tasks/s, ratio {ratios[-1]:.3f}"
        )
    return {"ratio": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pair per figure")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=None, help="paired runs per figure")
    parser.add_argument("--only", choices=["cost", "latency", "throughput"], default=None)
    args = parser.parse_args(argv)
    pairs = args.pairs or (1 if args.quick else 3)
    began = time.perf_counter()
    say(
        f"pd scale bench ({'quick' if args.quick else 'full'}, {pairs} pairs); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    summary = []
    with tempfile.TemporaryDirectory(prefix="pd-scale-") as raw:
        tmp = Path(raw)
        if args.only in (None, "cost"):
            cost = bench_cost(tmp, 200, 800, args.workers, pairs)
            summary.append(
                f"cost per task, 800 vs 200 tasks   {cost['ratio']:6.2f}x  (goal <= 1.2x; "
                f"coordinator CPU per task {cost['cpu_ratio']:.2f}x)"
            )
        if args.only in (None, "latency"):
            lat = bench_latency(tmp, 10, 3000, args.workers, pairs)
            summary.append(
                f"merge -> start, 3,000 waiting     {lat['loaded'] * 1e3:6.1f} ms (goal <= 50 ms; "
                f"nothing waiting {lat['empty'] * 1e3:.1f} ms)"
            )
        if args.only in (None, "throughput"):
            tput = bench_throughput(tmp, 1000 if args.quick else 4000, args.workers, pairs)
            summary.append(
                f"no-op throughput vs executor      {tput['ratio']:6.3f}x  (goal >= 0.5x)"
            )
    say("\nsummary (medians of paired runs)")
    for line in summary:
        say("  " + line)
    say(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
