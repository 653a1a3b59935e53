"""How long `pd abort` takes, and what it leaves behind (issue 9, item 15).

Run ``python bench/bench_abort.py [--runs N] [--load]``. Each run starts a real
``pd run --detach`` of a mission whose agents write a file and then hold (a command that
waits on a file nobody creates), waits until every worker is busy and one task is in
the merger's gate (also held), then times:

- ``pd abort`` from the moment it is started until it returns;
- from the same moment until every pd process the run recorded (coordinator, merger,
  workers) is gone.

Baseline, in the same run: the start of the CLI alone (``pd --help``), the part of an
abort no engine work can remove. Leftover branches are task branches that hold nothing
unmerged (their commit is already in the target): they should not exist after an abort.
The goal is an abort under 2 s with no leftovers; nothing here asserts it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import GIT_ENV, alive, new_repo, run_git, say

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "orchestrator"]
WORKERS = 3


def hold(path: Path) -> dict:
    command = f"while [ ! -e '{path}' ]; do sleep 0.02; done"
    return {"tool_calls": [{"name": "run_command", "input": {"command": command}}]}


def write(name: str) -> dict:
    return {"tool_calls": [{"name": "write_file", "input": {"path": name, "content": name}}]}


def finish() -> dict:
    return {"tool_calls": [{"name": "finish", "input": {"summary": "done"}}]}


def setup(folder: Path) -> tuple[Path, Path, Path]:
    """A repository, a mission (one task merging behind a held gate, the rest held
    agents) and its workspace."""
    repo = new_repo(folder / "repo")
    never = folder / "never"
    gate_started = folder / "gate-started"
    ids = ["gated", *(f"held{i}" for i in range(1, WORKERS + 2))]
    cassette = {t: [[write(f"{t}.txt"), hold(never), finish()]] for t in ids}
    cassette["gated"] = [[write("gated.txt"), finish()]]
    mission = {
        "name": "bench-abort",
        "test_command": f"if [ -f gated.txt ]; then touch {gate_started}; "
        f"while [ ! -e '{never}' ]; do sleep 0.02; done; fi; true",
        "team": [{"role": "backend-dev", "count": WORKERS}],
        "provider": {"name": "scripted", "cassette": "cassette.json"},
        "tasks": [{"id": t, "title": t} for t in ids],
        "sandbox": {"read_write": [str(folder)]},  # the gate marks its start here
    }
    (folder / "cassette.json").write_text(json.dumps({"version": 1, "tasks": cassette}))
    (folder / "mission.json").write_text(json.dumps(mission))
    home = folder / "home"
    home.mkdir()
    return repo, folder / "mission.json", home


def state(home: Path) -> dict:
    try:
        run = sorted((home / ".pd" / "runs").iterdir())[-1]
        return json.loads((run / "state.json").read_text())
    except (IndexError, FileNotFoundError, json.JSONDecodeError):
        return {}


def one_abort(folder: Path) -> tuple[float, float, int]:
    repo, mission, home = setup(folder)
    env = {**os.environ, **GIT_ENV, "PD_HOME": str(home)}
    subprocess.run(
        [*CLI, "run", str(mission), "--repo", str(repo), "--detach"],
        cwd=home,
        env=env,
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 120
    while True:
        snap = state(home)
        busy = sum(w.get("state") == "busy" for w in snap.get("workers", []))
        if busy >= WORKERS - 1 and (folder / "gate-started").exists():
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the run never got busy: {snap.get('status')}")
        time.sleep(0.02)
    recorded = [snap.get("coordinator", {}), snap.get("merger", {}), *snap["workers"]]
    recorded = [r for r in recorded if r.get("pid")]
    began = time.perf_counter()
    subprocess.run([*CLI, "abort"], cwd=home, env=env, check=True, capture_output=True)
    returned = time.perf_counter() - began
    while any(alive(r) for r in recorded):
        time.sleep(0.005)
    gone = time.perf_counter() - began
    main = run_git(repo, "rev-parse", "main")
    leftovers = 0
    for line in run_git(repo, "for-each-ref", "--format=%(objectname)", "refs/heads/pd/").split():
        code = subprocess.run(
            ["git", "-C", str(repo), "merge-base", "--is-ancestor", line, main], check=False
        ).returncode
        leftovers += code == 0
    return returned, gone, leftovers


def cli_start() -> float:
    began = time.perf_counter()
    subprocess.run([*CLI, "--help"], check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--load", action="store_true", help="two busy loops beside it")
    args = parser.parse_args()
    loops = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2 * args.load)
    ]
    try:
        returned, gone, leftovers, starts = [], [], [], []
        for i in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="pd-bench-abort-") as tmp:
                r, g, left = one_abort(Path(tmp))
            starts.append(cli_start())
            returned.append(r)
            gone.append(g)
            leftovers.append(left)
            say(f"run {i + 1}: abort returned {r:.2f}s, all gone {g:.2f}s, leftovers {left}")
    finally:
        for loop in loops:
            loop.kill()
    start = statistics.median(starts)
    say()
    say(f"{'figure':34} {'median':>8} {'max':>8} {'/ CLI start':>12}")
    for name, values in (("pd abort returns", returned), ("every pd process gone", gone)):
        median = statistics.median(values)
        say(f"{name:34} {median:7.2f}s {max(values):7.2f}s {median / start:11.1f}x")
    say(f"{'CLI start (pd --help), baseline':34} {start:7.2f}s {max(starts):7.2f}s")
    say(f"leftover branches holding nothing unmerged: {sum(leftovers)} over {args.runs} runs")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
