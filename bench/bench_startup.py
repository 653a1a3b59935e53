"""How long pd takes to start (issues 9 and 11): the fixed cost every command and run pays.

Run ``python bench/bench_startup.py [--runs N]``. Each figure is the median (and max) of
N real subprocesses, started the way a user starts them (``python -m orchestrator``):

- ``pd --version``: the CLI alone (Typer app, no command work);
- ``pd abort`` in a workspace with no run: the fast path that bypasses Typer (exit 2);
- ``pd run`` of a minimal mission (one task that writes a file and finishes, one worker,
  the scripted provider, gate ``true``): time from the start of the process to the
  ``run_started`` event (its ``at`` stamp in ``events.jsonl``), and to the process's end.

Baseline, in the same run: ``python -c pass`` with the same interpreter (the floor no pd
change can remove); every figure is also printed as a ratio to it. Beside the wall-clock
times, the CPU time (user + system) of the process and the children it waited for: on a
shared machine the wall clock moves with others' load, the CPU time much less (the
workers, forked by a forkserver nobody waits for, are not in it). Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import GIT_ENV, new_repo, say

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "orchestrator"]


Sample = tuple[float, float]  # (wall-clock seconds, CPU seconds)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> Sample:
    """Wall and CPU seconds of one subprocess; its exit code is not checked here."""
    cpu, began = children_cpu(), time.time()
    subprocess.run(args, cwd=cwd, env=env, capture_output=True, check=False)
    return time.time() - began, children_cpu() - cpu


def minimal_mission(folder: Path) -> Path:
    """One task, one worker, the scripted provider, gate ``true``."""
    turns = [
        {"tool_calls": [{"name": "write_file", "input": {"path": "a.txt", "content": "a\n"}}]},
        {"tool_calls": [{"name": "finish", "input": {"summary": "done"}}]},
    ]
    (folder / "cassette.json").write_text(json.dumps({"version": 1, "tasks": {"a": [turns]}}))
    mission = {
        "name": "bench-startup",
        "test_command": "true",
        "team": [{"role": "backend-dev", "count": 1}],
        "provider": {"name": "scripted", "cassette": "cassette.json"},
        "tasks": [{"id": "a", "title": "a"}],
    }
    path = folder / "mission.json"
    path.write_text(json.dumps(mission))
    return path


def one_run(folder: Path) -> tuple[float, Sample]:
    """A minimal ``pd run``: seconds to ``run_started``, and wall and CPU seconds of the
    whole process."""
    repo = new_repo(folder / "repo")
    mission = minimal_mission(folder)
    home = folder / "home"
    home.mkdir()
    env = {**os.environ, **GIT_ENV, "PD_HOME": str(home)}
    cpu, began = children_cpu(), time.time()
    proc = subprocess.run(
        [*CLI, "run", str(mission), "--repo", str(repo), "--quiet"],
        cwd=home,
        env=env,
        capture_output=True,
        check=False,
    )
    total = time.time() - began, children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"pd run exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    run_dir = next((home / ".pd" / "runs").iterdir())
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "run_started":
            return event["at"] - began, total
    raise RuntimeError("no run_started event")


def sample(runs: int, measure: Callable[[], Sample]) -> list[Sample]:
    return [measure() for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    env = {**os.environ, **GIT_ENV}
    with tempfile.TemporaryDirectory(prefix="pd-bench-startup-") as tmp:
        folder = Path(tmp)
        empty = folder / "empty"
        empty.mkdir()
        quiet_env = {**env, "PD_HOME": str(empty)}
        figures: dict[str, list[Sample]] = {}
        figures["python -c pass (baseline)"] = sample(
            args.runs, lambda: timed([sys.executable, "-c", "pass"], empty, quiet_env)
        )
        figures["pd --version"] = sample(
            args.runs, lambda: timed([*CLI, "--version"], empty, quiet_env)
        )
        figures["pd abort (no run)"] = sample(
            args.runs, lambda: timed([*CLI, "abort"], empty, quiet_env)
        )
        started, whole = [], []
        for i in range(args.runs):
            run_folder = folder / f"run{i}"
            run_folder.mkdir()
            to_start, total = one_run(run_folder)
            started.append((to_start, float("nan")))
            whole.append(total)
            say(f"run {i + 1}: run_started after {to_start:.2f}s, done after {total[0]:.2f}s")
        figures["pd run: to run_started"] = started
        figures["pd run: whole minimal run"] = whole
    base = statistics.median(wall for wall, _ in figures["python -c pass (baseline)"])
    say()
    say(f"{'figure':34} {'median':>8} {'max':>8} {'/ python':>9} {'CPU median':>11}")
    for name, values in figures.items():
        walls = [wall for wall, _ in values]
        median = statistics.median(walls)
        cpu = statistics.median(c for _, c in values)
        cpu_text = "-" if cpu != cpu else f"{cpu:.3f}s"  # NaN: not measured
        say(f"{name:34} {median:7.3f}s {max(walls):7.3f}s {median / base:8.1f}x {cpu_text:>11}")
    say(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
