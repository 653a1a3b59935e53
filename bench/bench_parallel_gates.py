"""``pd run`` with one gate and with parallel gates (``gate.parallel``): wall time of a
real run whose gate is slow, beside the number of gate runs it took.

Run ``python bench/bench_parallel_gates.py [--gate-seconds S] [--tasks N]``. Like every
bench here it asserts nothing. A mission of N tasks (default 8), each writing a file of
its own, one of them (the fourth) a file holding BROKEN, on 4 workers with the scripted
provider; the gate sleeps S seconds (default 1.0) and then fails if any file says BROKEN.
Each W (1, 2, 4) gets a fresh copy of the repository and a fresh ``PD_HOME``. Printed:
the run's wall time, the gate runs it made (``merger.log`` lines), the tasks merged, and
the ratio to W=1 (below 1: faster). The gate mostly sleeps, so the figure shows what
overlapping gates buys when the gate is the bottleneck, not CPU contention.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import GIT_ENV, run_git, say

CHECK = "! grep -rl --exclude=check.sh --exclude-dir=.git BROKEN .\n"


def mission(folder: Path, tasks: int, gate_seconds: float, parallel: int) -> Path:
    ids = [f"t{n}" for n in range(1, tasks + 1)]
    cassette = {
        t: [
            [
                {
                    "tool_calls": [
                        {
                            "name": "write_file",
                            "input": {
                                "path": f"{t}.txt",
                                "content": "BROKEN\n" if t == "t4" else f"{t}\n",
                            },
                        }
                    ]
                },
                {"tool_calls": [{"name": "finish", "input": {"summary": t}}]},
            ]
        ]
        for t in ids
    }
    (folder / "cassette.json").write_text(json.dumps({"version": 1, "tasks": cassette}))
    spec = {
        "name": f"bench-w{parallel}",
        "test_command": f"sleep {gate_seconds}; bash check.sh",
        "team": [{"role": "backend-dev", "count": 4}],
        "provider": {"name": "scripted", "cassette": "cassette.json"},
        "tasks": [{"id": t, "title": t} for t in ids],
        "max_attempts": 1,
        "gate": {"parallel": parallel},
    }
    path = folder / "mission.json"
    path.write_text(json.dumps(spec))
    return path


def one_run(root: Path, tasks: int, gate_seconds: float, parallel: int) -> tuple[float, int, int]:
    work = root / f"w{parallel}"
    repo = work / "repo"
    repo.mkdir(parents=True)
    run_git(repo, "init", "-q", "-b", "main")
    (repo / "check.sh").write_text(CHECK)
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "initial")
    home = work / "home"
    home.mkdir()
    path = mission(work, tasks, gate_seconds, parallel)
    env = {**os.environ, **GIT_ENV, "PD_HOME": str(home)}
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(path), "--repo", str(repo), "--quiet"],
        cwd=home,
        env=env,
        capture_output=True,
        check=False,
    )
    seconds = time.monotonic() - began
    (run,) = (home / ".pd" / "runs").iterdir()
    log = (run / "logs" / "merger.log").read_text()
    gates = sum(
        1
        for line in log.splitlines()
        if "gate failed" in line or "merged, head" in line or "passed on" in line
    )
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    merged = sum(1 for e in events if e["kind"] == "task_merged")
    return seconds, gates, merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gate-seconds", type=float, default=1.0)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    say(f"pd run, {args.tasks} tasks (one broken), 4 workers, gate sleeps {args.gate_seconds}s")
    say(f"{'W':>3} {'wall s':>8} {'gate runs':>10} {'merged':>7} {'vs W=1':>7}")
    with tempfile.TemporaryDirectory(prefix="pd-bench-gates-") as tmp:
        base = None
        for parallel in (1, 2, 4):
            seconds, gates, merged = one_run(Path(tmp), args.tasks, args.gate_seconds, parallel)
            base = base or seconds
            say(f"{parallel:>3} {seconds:>8.2f} {gates:>10} {merged:>7} {seconds / base:>7.2f}")


if __name__ == "__main__":
    main()
