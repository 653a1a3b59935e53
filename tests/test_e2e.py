"""End to end through the real CLI: real processes, pipes, git, files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import (
    IDENTITY,
    finish_turn,
    hold_turn,
    make_repo,
    pd,
    run_git,
    shared_dir,
    wait_file,
    write_mission,
    write_turn,
)

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], object], timeout: float = 120.0, what: str = "") -> object:
    """Poll until ``predicate`` holds; the timeout only ends a test that would hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def run_dir(home: Path) -> Path:
    runs = sorted((home / ".pd" / "runs").iterdir())
    return runs[-1]


def events(home: Path) -> list[dict]:
    path = run_dir(home) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def state(home: Path) -> dict:
    try:
        return json.loads((run_dir(home) / "state.json").read_text())
    except (FileNotFoundError, IndexError, json.JSONDecodeError):
        return {}


def start_run(
    mission: Path, repo: Path, home: Path, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    env = {**os.environ, **IDENTITY, "PD_HOME": str(home), **(env or {})}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            str(mission),
            "--repo",
            str(repo),
            "--quiet",
            *extra,
        ],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_running(home: Path, task: str) -> None:
    """Until the run's state shows ``task`` running."""
    wait_for(
        lambda: any(
            t["id"] == task and t["state"] == "running" for t in state(home).get("tasks", [])
        ),
        what=f"{task} running",
    )


def chain_tasks(n: int) -> list[dict]:
    return [
        {
            "id": f"t{i}",
            "title": f"task {i}",
            "role": "backend-dev",
            "deps": [f"t{i - 1}"] if i > 1 else [],
        }
        for i in range(1, n + 1)
    ]


def file_cassette(ids: list[str], delay: float = 0.0) -> dict:
    """Each task writes its own file, then finishes."""
    return {
        tid: [[write_turn(f"{tid}.txt", f"{tid}\n", delay=delay), finish_turn(tid)]] for tid in ids
    }


def no_processes_left(recorded: list[dict]) -> bool:
    for entry in recorded:
        pid, created = entry.get("pid"), entry.get("create_time")
        if not pid:
            continue
        try:
            proc = psutil.Process(pid)
            same = created is None or abs(proc.create_time() - created) < 0.01
            if same and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_run_merges_every_task_in_dependency_order(project: Path, tmp_path: Path) -> None:
    tasks = [*chain_tasks(3), {"id": "side", "title": "side", "role": "backend-dev"}]
    mission = write_mission(tmp_path / "m", tasks, file_cassette([t["id"] for t in tasks]))
    home = tmp_path / "home"
    home.mkdir()
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    files = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"t1.txt", "t2.txt", "t3.txt", "side.txt"} <= set(files)
    order = [e["task"] for e in events(home) if e["kind"] == "task_merged"]
    assert order.index("t1") < order.index("t2") < order.index("t3")
    starts = {e["task"]: e["seq"] for e in events(home) if e["kind"] == "task_assigned"}
    merges = {e["task"]: e["seq"] for e in events(home) if e["kind"] == "task_merged"}
    assert merges["t1"] < starts["t2"] and merges["t2"] < starts["t3"]
    assert run_git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert run_git(project, "status", "--porcelain") == ""
    assert run_git(project, "branch", "--list", "pd/*") == ""

    report = json.loads(
        pd("report", "--json", cwd=home, env={"PD_HOME": str(home)}, check=True).stdout
    )
    assert report["status"] == "finished" and report["counts"]["merged"] == 4
    logs = pd("logs", "--task", "t2", cwd=home, env={"PD_HOME": str(home)}, check=True).stdout
    assert "[t2]" in logs and "[t1]" not in logs
    # Every process's lines and the run's events, in the order they happened: the
    # merger's line for a landing comes before the coordinator's line for it.
    shown = pd("logs", "-n", "0", cwd=home, env={"PD_HOME": str(home)}, check=True).stdout
    lines = shown.splitlines()
    assert [line[:8] for line in lines] == sorted(line[:8] for line in lines)
    landed = next(
        i for i, line in enumerate(lines) if re.search(r"\[merger\].*\bt1\b.*merged", line)
    )
    assert landed < next(i for i, line in enumerate(lines) if "merge ✓ t1" in line)


def test_gate_rejection_returns_feedback_and_retry_merges(project: Path, tmp_path: Path) -> None:
    cassette = {
        "fix": [
            [write_turn("bad.txt", "BROKEN\n"), finish_turn("first try")],
            [write_turn("good.txt", "fine\n"), finish_turn("second try")],
        ]
    }
    mission = write_mission(tmp_path / "m", [{"id": "fix", "title": "Fix"}], cassette)
    home = tmp_path / "home"
    home.mkdir()
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    rejected = [e for e in events(home) if e["kind"] == "task_rejected"]
    assert len(rejected) == 1 and "gate failed" in rejected[0]["reason"]
    assert "bad.txt" in rejected[0]["log_tail"]  # check.sh printed the offending file
    transcript = (run_dir(home) / "transcripts" / "fix" / "2.jsonl").read_text()
    assert "bad.txt" in transcript  # the gate's log tail reached attempt 2's prompt
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert "good.txt" in tree and "bad.txt" not in tree
    kept = run_git(project, "for-each-ref", "--format=%(refname)", "refs/pd/rejected")
    assert kept.endswith("/fix/work/1")  # the rejected attempt's work is not lost
    assert "bad.txt" in run_git(project, "ls-tree", "--name-only", kept).split()
    assert run_git(project, "branch", "--list", "pd/*") == ""  # merged: branch dropped


def test_background_run_status_and_abort(project: Path, tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    tasks = [{"id": t, "title": t, "role": "backend-dev"} for t in ids]
    cassette = {
        t: [
            [
                {"tool_calls": [{"name": "run_command", "input": {"command": "sleep 60"}}]},
                finish_turn(),
            ]
        ]
        for t in ids
    }
    mission = write_mission(tmp_path / "m", tasks, cassette)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home)}
    start_head = run_git(project, "rev-parse", "main")
    result = pd("run", str(mission), "--repo", str(project), "--detach", cwd=home, env=env)
    assert result.returncode == 0, result.stderr

    def busy() -> dict | None:
        out = pd("status", "--json", cwd=home, env=env)
        data = json.loads(out.stdout) if out.returncode == 0 else {}
        return data if sum(w["state"] == "busy" for w in data.get("workers", [])) == 2 else None

    snapshot = wait_for(busy, what="two busy workers")
    assert snapshot["status"] == "running" and snapshot["coordinator_alive"]
    assert {t["state"] for t in snapshot["tasks"]} == {"running", "pending"}
    recorded = [snapshot["coordinator"], snapshot["merger"], *snapshot["workers"]]
    sleepers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][-1:] == ["sleep 60"]
    ]

    result = pd("abort", cwd=home, env=env)  # how fast: bench/bench_abort.py
    assert result.returncode == 0, result.stderr
    assert "aborted" in result.stdout
    assert wait_for(lambda: no_processes_left(recorded), what="no pd processes")
    assert wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in sleepers),
        what="commands killed",
    )
    assert run_git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert run_git(project, "rev-parse", "main") == start_head  # nothing half-moved
    assert run_git(project, "branch", "--list", "pd/*") == ""  # no empty task branches
    assert run_git(project, "status", "--porcelain") == ""
    final = json.loads(pd("status", "--json", cwd=home, env=env).stdout)
    assert final["status"] == "aborted" and final["exit_code"] == 130


def test_worker_killed_mid_task_is_respawned_and_run_finishes(
    project: Path, tmp_path: Path
) -> None:
    ids = ["a", "b", "c"]
    cassette = file_cassette(ids)
    cassette["slow"] = [
        [hold_turn(), finish_turn("never")],  # held until its worker is killed
        [write_turn("slow.txt", "slow\n"), finish_turn("slow")],
    ]
    tasks = [{"id": t, "title": t, "role": "backend-dev"} for t in ["slow", *ids]]
    mission = write_mission(tmp_path / "m", tasks, cassette)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)

    def slow_worker() -> int | None:
        for worker in state(home).get("workers", []):
            if worker["task"] == "slow" and worker["pid"]:
                return worker["pid"]
        return None

    pid = wait_for(slow_worker, what="slow task running")
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    kinds = [(e["kind"], e.get("worker"), e.get("task")) for e in events(home)]
    crashed = [k for k in kinds if k[0] == "worker_crashed"]
    assert crashed and crashed[0][2] == "slow"
    assert any(k[0] == "worker_respawned" and k[1] == crashed[0][1] for k in kinds)
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"slow.txt", "a.txt", "b.txt", "c.txt"} <= set(tree)


def test_coordinator_crash_then_resume_keeps_merged_work(project: Path, tmp_path: Path) -> None:
    ids = ["t1", "t2", "t3"]
    cassette = file_cassette(ids)
    shared, sandbox = shared_dir(tmp_path)
    release = shared / "release-t2"  # held until the coordinator is killed
    cassette["t2"] = [[hold_turn(release), write_turn("t2.txt", "t2\n"), finish_turn("t2")]]
    mission = write_mission(tmp_path / "m", chain_tasks(3), cassette, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_running(home, "t2")
    workers = [w for w in state(home)["workers"] if w["pid"]]
    proc.kill()
    proc.wait(10)
    assert wait_for(lambda: no_processes_left(workers), what="workers gone")
    head_after_crash = run_git(project, "rev-parse", "main")
    assert "t1.txt" in run_git(project, "ls-tree", "--name-only", "main").split()

    env = {"PD_HOME": str(home)}
    release.touch()
    crashed = json.loads(pd("status", "--json", cwd=home, env=env).stdout)
    assert crashed["status"] == "crashed" and "pd resume" in crashed["hint"]
    result = pd("resume", cwd=home, env=env)  # RUN: the newest, as the README says
    assert result.returncode == 0, result.stdout + result.stderr
    assigned = [e["task"] for e in events(home) if e["kind"] == "task_assigned"]
    assert assigned.count("t1") == 1  # merged work is never redone
    assert run_git(project, "merge-base", "--is-ancestor", head_after_crash, "main") == ""
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert {"t1.txt", "t2.txt", "t3.txt"} <= set(tree)
    assert run_git(project, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_resume_gates_with_the_test_command_the_run_started_with(tmp_path: Path) -> None:
    """The run's test command was detected (pytest); a task then adds a Makefile whose
    ``test`` target fails, and the run is killed. The resumed run still gates with
    pytest, the command it started with, not with what the repository shows now."""
    project = make_repo(
        tmp_path / "project",
        {
            "pyproject.toml": "[tool.pytest.ini_options]\n",
            "tests/test_ok.py": "def test_ok(): pass\n",
        },
    )
    shared, sandbox = shared_dir(tmp_path)
    release = shared / "release-t2"
    cassette = {
        "t1": [[write_turn("Makefile", "test:\n\texit 1\n"), finish_turn("t1")]],
        "t2": [[hold_turn(release), write_turn("t2.txt", "t2\n"), finish_turn("t2")]],
    }
    tasks = chain_tasks(2)
    mission = write_mission(tmp_path / "m", tasks, cassette, test_command=None, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_running(home, "t2")
    proc.kill()
    proc.wait(10)
    assert "Makefile" in run_git(project, "ls-tree", "--name-only", "main").split()
    release.touch()
    result = pd("resume", run_dir(home).name, cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "t2.txt" in run_git(project, "ls-tree", "--name-only", "main").split()


def test_abort_one_task_blocks_its_dependents(project: Path, tmp_path: Path) -> None:
    cassette = file_cassette(["t1", "t2", "free"])
    cassette["t1"] = [[hold_turn(), finish_turn()]]
    tasks = [*chain_tasks(2), {"id": "free", "title": "free", "role": "backend-dev"}]
    mission = write_mission(tmp_path / "m", tasks, cassette)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_running(home, "t1")
    result = pd("abort", "--task", "t1", cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, output
    final = {t["id"]: t["state"] for t in state(home)["tasks"]}
    assert final == {"t1": "aborted", "t2": "blocked", "free": "merged"}


def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {"PD_HOME": "", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = pd("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    demo = tmp_path / "demo"
    log = run_git(demo, "log", "--format=%s", "main")
    for task in ["slugify", "word-count", "changelog", "cli", "edge-cases", "readme"]:
        assert f"{task}:" in log
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=demo,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert tests.returncode == 0, tests.stdout
    report = json.loads(pd("report", "--json", cwd=demo, env=env, check=True).stdout)
    assert report["rejections"] == 1 and report["counts"]["merged"] == 6
    rejected = next(t for t in report["tasks"] if t["rejections"])["rejections"][0]
    assert rejected["detail"].startswith("FAILED tests/")  # the failing test, named
    status = json.loads(pd("status", "--json", cwd=demo, env=env, check=True).stdout)
    assert {w["state"] for w in status["workers"]} == {"stopped"}
    assert run_git(demo, "status", "--porcelain") == ""
    assert run_git(demo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_setup_runs_once_per_worktree_and_its_files_stay_out_of_commits(
    project: Path, tmp_path: Path
) -> None:
    env_file = tmp_path / "dot-env"
    env_file.write_text("API_URL=http://localhost\n")
    ids = ["a", "b", "c", "d"]
    cassette = {
        t: [
            [
                {
                    "tool_calls": [
                        {
                            "name": "run_command",
                            "input": {"command": f"cat .env worker-env.txt > seen-{t}.txt"},
                        }
                    ]
                },
                finish_turn(),
            ]
        ]
        for t in ids
    }
    ports = "$PD_WORKER_ID $PD_PORT_BASE $PD_PORT_STRIDE"
    setup = f'cp "{env_file}" .env && echo "{ports}" > worker-env.txt'
    mission = write_mission(
        tmp_path / "m",
        [{"id": t, "title": t} for t in ids],
        cassette,
        setup=setup,
        port_base=30000,
        port_stride=10,
        sandbox={"read_only": [str(env_file)]},  # setup is sandboxed: it may read this file
    )
    home = tmp_path / "home"
    home.mkdir()
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    tree = run_git(project, "ls-tree", "--name-only", "main").split()
    assert ".env" not in tree and "worker-env.txt" not in tree
    seen = {t: run_git(project, "show", f"main:seen-{t}.txt") for t in ids}
    assert all(text.startswith("API_URL=http://localhost") for text in seen.values())
    workers = {text.splitlines()[1] for text in seen.values()}
    assert workers <= {"w1 30010 10", "w2 30020 10"} and len(workers) == 2
    per_worker = [e["worker"] for e in events(home) if e["kind"] == "task_assigned"]
    assert max(per_worker.count(w) for w in set(per_worker)) >= 2  # a worktree was reused


def test_frozen_worker_misses_heartbeats_and_is_replaced(project: Path, tmp_path: Path) -> None:
    cassette = file_cassette(["a", "b"])
    cassette["hang"] = [
        [hold_turn(), finish_turn()],  # held until it is stopped, missed and killed
        [write_turn("hang.txt", "hang\n"), finish_turn()],
    ]
    tasks = [{"id": t, "title": t} for t in ["hang", "a", "b"]]
    mission = write_mission(
        tmp_path / "m", tasks, cassette, limits={"heartbeat_interval": 0.3, "missed_heartbeats": 3}
    )
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    pid = wait_for(
        lambda: next(
            (w["pid"] for w in state(home).get("workers", []) if w["task"] == "hang" and w["pid"]),
            None,
        ),
        what="hang runs",
    )
    os.kill(pid, signal.SIGSTOP)  # alive but silent: only heartbeats can tell
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    kinds = [e["kind"] for e in events(home)]
    assert "heartbeat_missed" in kinds and "worker_respawned" in kinds
    assert kinds.index("heartbeat_missed") < kinds.index("worker_crashed")
    assert "hang.txt" in run_git(project, "ls-tree", "--name-only", "main").split()


def test_follow_and_watch_end_with_the_run(project: Path, tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    cassette = {t: [[write_turn(f"{t}.txt", t, delay=0.7), finish_turn(t)]] for t in ids}
    mission = write_mission(tmp_path / "m", [{"id": t, "title": t} for t in ids], cassette)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, **IDENTITY, "PD_HOME": str(home)}
    assert (
        pd("run", str(mission), "--repo", str(project), "--detach", cwd=home, env=env).returncode
        == 0
    )
    wait_for(lambda: state(home).get("status") == "running", what="run started")
    cli = [sys.executable, "-m", "orchestrator"]
    follow = subprocess.Popen(
        [*cli, "logs", "--follow"], cwd=home, env=env, stdout=subprocess.PIPE, text=True
    )
    watch = subprocess.Popen(
        [*cli, "status", "--watch"], cwd=home, env=env, stdout=subprocess.PIPE, text=True
    )
    followed, _ = follow.communicate(timeout=60)
    watched, _ = watch.communicate(timeout=60)
    assert follow.returncode == 0 and watch.returncode == 0
    for task in ids:  # lines written after `logs` started reached it
        assert f"[{task}] attempt 1 starts" in followed
    assert "run finished" in followed
    assert "finished" in watched


def test_abort_one_worker_moves_its_task_to_another(project: Path, tmp_path: Path) -> None:
    cassette = file_cassette(["quick"])
    cassette["long"] = [
        [hold_turn(), finish_turn()],  # held until its worker is stopped
        [write_turn("long.txt", "long\n"), finish_turn()],
    ]
    tasks = [{"id": "long", "title": "long"}, {"id": "quick", "title": "quick"}]
    mission = write_mission(tmp_path / "m", tasks, cassette)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    worker = wait_for(
        lambda: next(
            (w["id"] for w in state(home).get("workers", []) if w["task"] == "long"), None
        ),
        what="long running",
    )
    result = pd("abort", "--worker", worker, cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    final = state(home)
    assert {w["id"]: w["state"] for w in final["workers"]}[worker] == "retired"
    starts = [e for e in events(home) if e["kind"] == "task_assigned" and e["task"] == "long"]
    assert len(starts) == 2 and starts[1]["worker"] != worker
    assert "long.txt" in run_git(project, "ls-tree", "--name-only", "main").split()


def test_ctrl_c_aborts_cleanly_with_exit_130(project: Path, tmp_path: Path) -> None:
    ids = ["a", "b"]
    cassette = {t: [[hold_turn(), finish_turn()]] for t in ids}
    mission = write_mission(tmp_path / "m", [{"id": t, "title": t} for t in ids], cassette)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_for(
        lambda: sum(w["state"] == "busy" for w in state(home).get("workers", [])) == 2,
        what="both workers busy",
    )
    recorded = state(home)["workers"]
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert wait_for(lambda: no_processes_left(recorded), what="workers gone")
    assert run_git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert state(home)["status"] == "aborted"


def test_abort_after_the_coordinator_died_cleans_up(project: Path, tmp_path: Path) -> None:
    cassette = {"a": [[hold_turn(), finish_turn()]]}
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "a"}], cassette)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_for(
        lambda: any(w["state"] == "busy" for w in state(home).get("workers", [])),
        what="worker busy",
    )
    proc.kill()
    proc.wait(10)
    result = pd("abort", cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "not running" in result.stdout
    assert run_git(project, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert state(home)["status"] == "aborted"


def test_task_aborted_while_merging_is_recorded_as_merged_when_it_lands(
    project: Path, tmp_path: Path
) -> None:
    shared, sandbox = shared_dir(tmp_path)
    release = shared / "release-gate"
    gate = f"if [ -f slow-gate ]; then {wait_file(release)}; fi; bash check.sh"
    cassette = {"a": [[write_turn("slow-gate", "x"), finish_turn()]]}
    tasks = [{"id": "a", "title": "a"}, {"id": "b", "title": "b", "deps": ["a"]}]
    cassette["b"] = [[write_turn("b.txt", "b"), finish_turn()]]
    mission = write_mission(tmp_path / "m", tasks, cassette, test_command=gate, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_for(lambda: (state(home).get("merger") or {}).get("task") == "a", what="a merging")
    assert pd("abort", "--task", "a", cwd=home, env={"PD_HOME": str(home)}).returncode == 0
    wait_for(lambda: any(e["kind"] == "task_aborted" for e in events(home)), what="abort taken")
    release.touch()  # only now may the gate pass and the merge land
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output  # it landed, and so did its unblocked dependent
    kinds = [(e["kind"], e.get("task")) for e in events(home)]
    assert kinds.index(("task_aborted", "a")) < kinds.index(("task_merged", "a"))
    assert {t["id"]: t["state"] for t in state(home)["tasks"]} == {"a": "merged", "b": "merged"}


def test_worktrees_folder_from_the_command_line(project: Path, tmp_path: Path) -> None:
    cassette = {
        "a": [
            [
                {"tool_calls": [{"name": "run_command", "input": {"command": "pwd > where.txt"}}]},
                finish_turn(),
            ]
        ]
    }
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "a"}], cassette)
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere" / "wt"
    result = pd(
        "run",
        str(mission),
        "--repo",
        str(project),
        "--worktrees",
        str(elsewhere),
        cwd=home,
        env={"PD_HOME": str(home)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    where = Path(run_git(project, "show", "main:where.txt"))
    assert where.resolve().is_relative_to(elsewhere.resolve())
    assert not elsewhere.exists() or not any(elsewhere.iterdir())
    assert not (home / "worktrees").exists()


def test_context_files_and_the_session_log_reach_later_tasks(project: Path, tmp_path: Path) -> None:
    (project / "BRIEF.md").write_text("Our style: tabs, never spaces.\n")
    run_git(project, "add", "BRIEF.md")
    run_git(project, "commit", "-q", "-m", "brief")
    mission = write_mission(
        tmp_path / "m", chain_tasks(2), file_cassette(["t1", "t2"]), context_files=["BRIEF.md"]
    )
    home = tmp_path / "home"
    home.mkdir()
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    prompts = {}
    for task in ("t1", "t2"):
        lines = (run_dir(home) / "transcripts" / task / "1.jsonl").read_text().splitlines()
        first = next(e for e in map(json.loads, lines) if e["kind"] == "request")
        prompts[task] = json.dumps(first["new_messages"])
    assert all("Our style: tabs, never spaces." in p for p in prompts.values())
    assert "merged so far" not in prompts["t1"]
    assert "t1: " in prompts["t2"] and "merged so far" in prompts["t2"]  # t1's line
    assert (run_dir(home) / "session.log").read_text().splitlines()[0].startswith("t1: ")
