"""The run's merge queue end to end: finished work that waits lands in batches, a batch
that fails is split until the broken task is found, and a flaky gate costs nobody an
attempt. Real ``pd run``, real git, the gate held on a file the test releases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import (
    finish_turn,
    make_repo,
    pd,
    run_git,
    shared_dir,
    wait_file,
    write_mission,
    write_turn,
)


def events(home: Path) -> list[dict]:
    (run,) = (home / ".pd" / "runs").iterdir()
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def run(home: Path, mission: Path, project: Path) -> int:
    home.mkdir(exist_ok=True)
    env = {"PD_HOME": str(home)}
    result = pd("run", str(mission), "--repo", str(project), cwd=home, env=env, timeout=300)
    return result.returncode


def test_waiting_work_lands_in_a_batch_and_the_broken_task_is_found(
    project: Path, tmp_path: Path
) -> None:
    shared, rw = shared_dir(tmp_path)
    release = shared / "release"
    # The first gate run waits for the test: the other tasks finish meanwhile and wait.
    script = shared / "gate.sh"
    script.write_text(f"{wait_file(release)}\nbash check.sh\n")
    gate = f"bash {script}"
    tasks = [{"id": t, "title": t} for t in ("a", "b", "c", "d")]
    cassette = {t["id"]: [[write_turn(f"{t['id']}.txt", "ok\n"), finish_turn()]] for t in tasks}
    cassette["c"] = [[write_turn("c.txt", "BROKEN\n"), finish_turn()]]
    team = [{"role": "backend-dev", "count": 4}]
    mission = write_mission(
        tmp_path / "m",
        tasks,
        cassette,
        team=team,
        max_attempts=1,
        test_command=gate,
        sandbox=rw,
    )
    start = run_git(project, "rev-parse", "main")
    # Release the gate once all four have finished, from a background watcher.
    home = tmp_path / "home"
    (home / ".pd").mkdir(parents=True)
    watcher = subprocess.Popen(
        [
            "bash",
            "-c",
            f"until [ $(grep -ho task_submitted {home}/.pd/runs/*/events.jsonl 2>/dev/null "
            f"| wc -l) -ge 4 ]; do sleep 0.05; done; touch {release}",
        ]
    )
    try:
        code = run(home, mission, project)
    finally:
        watcher.kill()

    assert code == 1  # c failed
    log = events(home)
    merged = {e["task"] for e in log if e["kind"] == "task_merged"}
    assert merged == {"a", "b", "d"}
    assert [e["task"] for e in log if e["kind"] == "task_failed"] == ["c"]
    (run_dir,) = (home / ".pd" / "runs").iterdir()
    batches = list((run_dir / "logs").glob("gate-run*.log"))
    assert batches, "some finished tasks were merged and tested together"
    # Every commit main moved through is a tree the gate passes: c's BROKEN file in none.
    for commit in run_git(project, "rev-list", "--first-parent", f"{start}..main").split():
        assert "c.txt" not in run_git(project, "ls-tree", "--name-only", commit).split()


def test_a_gate_that_fails_once_is_flaky_and_costs_no_attempt(
    project: Path, tmp_path: Path
) -> None:
    shared, rw = shared_dir(tmp_path)
    count = shared / "gate-runs"
    script = shared / "flaky.sh"  # fails on its first run, passes on every later one
    script.write_text(f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}\n")
    script.write_text(script.read_text() + "[ $n -ge 1 ]\n")
    flaky = f"bash {script}"
    cassette = {"a": [[write_turn("a.txt", "ok\n"), finish_turn()]]}
    mission = write_mission(
        tmp_path / "m", [{"id": "a", "title": "A"}], cassette, test_command=flaky, sandbox=rw
    )
    home = tmp_path / "home"
    assert run(home, mission, project) == 0

    log = events(home)
    assert [e["kind"] for e in log if e["kind"] in ("task_rejected", "gate_flaky")] == [
        "gate_flaky"
    ]
    assert [e["attempt"] for e in log if e["kind"] == "task_merged"] == [1]
    report = pd("report", cwd=home, env={"PD_HOME": str(home)}, check=True).stdout
    assert "1 flaky gate run" in report


def test_a_task_s_second_gate_run_starts_with_the_tests_that_failed(tmp_path: Path) -> None:
    """The gate (pytest) fails a task on test_z; before the task goes back, the retry
    runs test_z first and stops at its failure: test_a does not run again, and the
    failing test is named in the record."""
    project = make_repo(
        tmp_path / "project",
        {  # test_z fails where BROKEN is
            "pyproject.toml": "[tool.pytest.ini_options]\n",
            "tests/test_a.py": "def test_a():\n    pass\n",
            "tests/test_z.py": "import os\ndef test_z():\n    assert not os.path.isfile('BROKEN')",
        },
    )
    cassette = {"a": [[write_turn("BROKEN", "x\n"), finish_turn()]]}
    gate = f"{sys.executable} -m pytest -q -p no:randomly -p no:xdist tests"
    mission = write_mission(
        tmp_path / "m", [{"id": "a", "title": "A"}], cassette, test_command=gate, max_attempts=1
    )
    home = tmp_path / "home"
    assert run(home, mission, project) != 0
    (log,) = (home / ".pd" / "runs").glob("*/logs/gate-a-1.log")  # the last run's output
    text = log.read_text()
    assert "1 failed" in text and "passed" not in text, text
    failed = [e for e in events(home) if e["kind"] == "attempt_failed"]
    assert failed and "test_z" in json.dumps(failed)
