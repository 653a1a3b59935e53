"""Kill the coordinator at random moments, resume, and check nothing was lost (issue 9).

Run ``python bench/chaos_kill.py [--kills 20] [--seed N]``. Each round starts a real
``pd run`` of a small mission (tasks that take a little while, a gate that takes a
little while), sends the coordinator ``kill -9`` at a random moment (during agent work,
during a gate, around a merge), then:

- times how long until every pd process the run recorded is gone;
- runs ``pd resume`` to the end;
- checks the record against git: every move of the target branch's first-parent history
  is a head the event log recorded, no task merged twice, every task merged.

It prints one line per round and a summary; it never asserts. The bars: zero unrecorded
moves, zero double merges, zero lost tasks, and every process gone within 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import GIT_ENV, alive, new_repo, run_git, say

CLI = [sys.executable, "-m", "orchestrator"]
TASKS = 6


def mission(folder: Path) -> Path:
    def turn(name: str) -> dict:
        call = {"name": "write_file", "input": {"path": name, "content": name}}
        return {"tool_calls": [call], "delay": 0.3}

    finish = {"tool_calls": [{"name": "finish", "input": {"summary": "done"}}]}
    ids = [f"t{i}" for i in range(TASKS)]
    cassette = {t: [[turn(f"{t}.txt"), finish]] * 3 for t in ids}
    tasks = [
        {"id": t, "title": t, **({"deps": [ids[i - 2]]} if i >= 2 else {})}
        for i, t in enumerate(ids)
    ]
    data = {
        "name": "chaos",
        "test_command": "sleep 0.4; true",
        "team": [{"role": "backend-dev", "count": 2}],
        "provider": {"name": "scripted", "cassette": "cassette.json"},
        "tasks": tasks,
    }
    (folder / "cassette.json").write_text(json.dumps({"version": 1, "tasks": cassette}))
    (folder / "mission.json").write_text(json.dumps(data))
    return folder / "mission.json"


def events(home: Path) -> list[dict]:
    run = sorted((home / ".pd" / "runs").iterdir())[-1]
    lines = (run / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def recorded(home: Path) -> list[dict]:
    try:
        run = sorted((home / ".pd" / "runs").iterdir())[-1]
        state = json.loads((run / "state.json").read_text())
    except (IndexError, FileNotFoundError, json.JSONDecodeError):
        return []
    found = [state.get("coordinator", {}), state.get("merger", {}), *state.get("workers", [])]
    return [p for p in found if p.get("pid")]


def one_round(folder: Path, rng: random.Random) -> dict:
    repo = new_repo(folder / "repo")
    start = run_git(repo, "rev-parse", "main")
    home = folder / "home"
    home.mkdir()
    env = {**os.environ, **GIT_ENV, "PD_HOME": str(home)}
    command = [*CLI, "run", str(mission(folder)), "--repo", str(repo), "--quiet"]
    proc = subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.DEVNULL)
    while not recorded(home):  # the coordinator is up: from here any moment will do
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 4.0))
    pids = recorded(home)
    proc.kill()
    killed = time.perf_counter()
    proc.wait()
    while any(alive(p) for p in pids):
        time.sleep(0.005)
    gone = time.perf_counter() - killed
    finished_before = proc.returncode == 0
    run = sorted((home / ".pd" / "runs").iterdir())[-1].name
    resumed = subprocess.run(
        [*CLI, "resume", run], cwd=home, env=env, capture_output=True, text=True, check=False
    )
    log = events(home)
    heads = {e["head"] for e in log if e["kind"] in ("run_started", "task_merged")}
    history = run_git(repo, "rev-list", "--first-parent", f"{start}..main").split()
    unrecorded = [c for c in history if c not in heads]
    merged = [e["task"] for e in log if e["kind"] == "task_merged"]
    return {
        "gone": gone,
        "resume_exit": resumed.returncode,
        "unrecorded": len(unrecorded),
        "twice": len(merged) - len(set(merged)),
        "lost": TASKS - len(set(merged)),
        "finished_before_kill": finished_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rounds = []
    for i in range(args.kills):
        with tempfile.TemporaryDirectory(prefix="pd-chaos-") as tmp:
            result = one_round(Path(tmp), rng)
        rounds.append(result)
        say(
            f"kill {i + 1:2}: processes gone {result['gone']:.2f}s, resume exit "
            f"{result['resume_exit']}, unrecorded moves {result['unrecorded']}, merged twice "
            f"{result['twice']}, lost {result['lost']}"
        )
    say()
    slowest = max(r["gone"] for r in rounds)
    say(f"kills: {len(rounds)}; max time to every process gone: {slowest:.2f}s")
    for key in ("unrecorded", "twice", "lost"):
        say(f"{key}: {sum(r[key] for r in rounds)}")
    say(f"resumes that did not exit 0: {sum(r['resume_exit'] != 0 for r in rounds)}")


if __name__ == "__main__":
    main()
