"""Faults around the merge ratchet (issue 9, items 11 and 15): the target branch moves
only while a live coordinator wants it, and every move is in the event log.

Gates are held on files (or on the event log) that the test controls, so each fault
lands exactly where the test wants it: during the gate, before the compare-and-swap.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.record import events as ev
from orchestrator.record.control import await_answer
from orchestrator.record.store import RunStore
from tests.conftest import (
    finish_turn,
    pd,
    run_git,
    shared_dir,
    wait_file,
    write_mission,
    write_turn,
)
from tests.test_e2e import events, no_processes_left, run_dir, start_run, state, wait_for

pytestmark = pytest.mark.slow


def mission_with_gate(tmp_path: Path, hold: str, a_after_b: bool = False) -> Path:
    """Task a's gate runs ``hold`` first (b merges freely: independent, or before a when
    ``a_after_b``); the gate leaves ``gate-started`` in the shared folder when it begins."""
    shared, sandbox = shared_dir(tmp_path)
    started = shared / "gate-started"
    gate = f"if [ -f a.txt ]; then touch {started}; {hold}; fi; bash check.sh"
    cassette = {t: [[write_turn(f"{t}.txt", t), finish_turn()]] for t in ("a", "b")}
    tasks = [
        {"id": "a", "title": "a", "deps": ["b"] if a_after_b else []},
        {"id": "b", "title": "b"},
    ]
    return write_mission(tmp_path / "m", tasks, cassette, test_command=gate, sandbox=sandbox)


def recorded_head(home: Path) -> str | None:
    """The target head the event log says the run left."""
    head = None
    for event in events(home):
        if event["kind"] in ("run_started", "task_merged"):
            head = event["head"]
    return head


def pd_processes(home: Path) -> list[dict]:
    snapshot = state(home)
    return [snapshot.get("coordinator", {}), snapshot.get("merger", {}), *snapshot["workers"]]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def commands_mentioning(text: str) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["cmdline"]) if text in " ".join(p.info["cmdline"] or [])
    ]


def start(
    tmp_path: Path, project: Path, hold: str, a_after_b: bool = False
) -> tuple[Path, subprocess.Popen]:
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission_with_gate(tmp_path, hold, a_after_b), project, home)
    wait_for(lambda: (tmp_path / "shared" / "gate-started").exists(), what="a's gate running")
    return home, proc


def test_a_killed_coordinator_takes_the_merger_and_its_gate_along(
    project: Path, tmp_path: Path
) -> None:
    release = tmp_path / "shared" / "release-gate"
    home, proc = start(tmp_path, project, wait_file(release))
    recorded = pd_processes(home)
    gates = commands_mentioning(str(release))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_for(lambda: no_processes_left(recorded), what="every pd process gone")
    assert gates and wait_for(lambda: not any(alive(p) for p in gates), what="gate killed")
    release.touch()  # a gate that survived would now pass and its merger move the target
    assert run_git(project, "rev-parse", "main") == recorded_head(home)
    result = pd("resume", run_dir(home).name, cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    merged = [e["task"] for e in events(home) if e["kind"] == "task_merged"]
    assert sorted(merged) == ["a", "b"]  # each exactly once
    assert run_git(project, "rev-parse", "main") == recorded_head(home)


def test_abort_during_a_gate_leaves_the_record_and_the_target_in_agreement(
    project: Path, tmp_path: Path
) -> None:
    # The gate passes the moment the run records its abort: the worst moment, when the
    # run has given the task up while its merge could still land.
    release = tmp_path / "shared" / "release-gate"
    home, proc = start(tmp_path, project, wait_file(release))

    def release_on_abort() -> None:
        while proc.poll() is None:
            if any(e["kind"] == "run_aborted" for e in events(home)):
                release.touch()
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=release_on_abort, daemon=True)
    watcher.start()
    env = {"PD_HOME": str(home)}
    recorded = pd_processes(home)
    result = pd("abort", cwd=home, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert wait_for(lambda: no_processes_left(recorded), what="every pd process gone")
    assert run_git(project, "rev-parse", "main") == recorded_head(home)
    tasks = {t["id"]: t["state"] for t in state(home)["tasks"]}
    if tasks["a"] != "merged":  # not landed: its work is kept on its branch
        branch = f"pd/{run_dir(home).name}/a/work"
        assert "a.txt" in run_git(project, "ls-tree", "--name-only", branch).split()
    assert json.loads(pd("report", "--json", cwd=home, env=env).stdout)["status"] == "aborted"


@pytest.mark.parametrize("last", [False, True], ids=["b-independent", "a-is-the-last-task"])
def test_a_merge_that_landed_untold_is_recorded_on_resume(
    project: Path, tmp_path: Path, last: bool
) -> None:
    """The one window left: the merger moved the target inside its critical section and
    the coordinator died before hearing of it. Resume records that move, never redoes it,
    also when that move was the run's last work (then resume has nothing left to run)."""
    release = tmp_path / "shared" / "release-gate"
    home, proc = start(tmp_path, project, wait_file(release), a_after_b=last)
    submitted = next(e for e in events(home) if e["kind"] == "task_submitted" and e["task"] == "a")
    started = [e["commits"] for e in events(home) if e["kind"] == "batch_started"]
    assert any(c.get("a") == submitted["commit"] for c in started)  # the intent is first
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_git(project, "merge", "-q", "--no-ff", "-m", "the merger's move", submitted["commit"])
    landed = run_git(project, "rev-parse", "main")
    release.touch()
    result = pd("resume", run_dir(home).name, cwd=home, env={"PD_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    merges = [e for e in events(home) if e["kind"] == "task_merged" and e["task"] == "a"]
    assert len(merges) == 1 and merges[0]["recovered"] and merges[0]["head"] == landed
    assigned = [e["task"] for e in events(home) if e["kind"] == "task_assigned"]
    assert assigned.count("a") == 1
    assert run_git(project, "rev-parse", "main") == recorded_head(home)


def test_abort_of_a_task_or_worker_the_live_run_lacks_is_bad_input(
    project: Path, tmp_path: Path
) -> None:
    release = tmp_path / "shared" / "release-gate"
    home, proc = start(tmp_path, project, wait_file(release))
    env = {"PD_HOME": str(home)}
    for option, name in (("--task", "nope"), ("--worker", "w99")):
        result = pd("abort", option, name, cwd=home, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and name in result.stderr
        assert "Traceback" not in result.stderr
    assert pd("abort", "--help", cwd=home, env=env).returncode == 0
    assert state(home)["status"] == "running"  # nothing was stopped
    release.touch()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output


def test_a_request_pd_cannot_act_on_is_answered_not_dropped(project: Path, tmp_path: Path) -> None:
    """A malformed control request, or one naming what the live run lacks, gets an answer
    with the reason and an event; the run goes on, and a good request still works."""
    release = tmp_path / "shared" / "release-gate"
    home, proc = start(tmp_path, project, wait_file(release))
    store = RunStore.open(home=home)
    bad = {
        "garbage": "not json at all",
        "unknown": json.dumps({"action": "explode"}),
        "typed": json.dumps({"action": "abort", "task": 5}),
        "both": json.dumps({"action": "abort", "task": "a", "worker": "w1"}),
        "ghost": json.dumps({"action": "abort", "task": "nope"}),
    }
    sent = {}
    for name, body in bad.items():
        path = store.control_dir / f"0-{name}.json"
        path.write_text(body)
        sent[name] = path
    answers = {name: await_answer(store, path) for name, path in sent.items()}
    assert all(answers.values()), answers
    assert "explode" in answers["unknown"] and "nope" in answers["ghost"]
    refused = [e for e in store.events() if isinstance(e, ev.ControlRefused)]
    assert len(refused) == len(bad)
    assert state(home)["status"] == "running"  # nothing was stopped
    release.touch()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
