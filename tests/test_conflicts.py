"""A merge conflict, end to end: counted apart from gate rejections, its paths said once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import finish_turn, pd, run_git, shared_dir, write_mission, write_turn
from tests.test_e2e import events, start_run, wait_for

pytestmark = pytest.mark.slow


def hold(waiting: Path, release: Path) -> dict:
    """A turn whose command says it is waiting, then waits until the test releases it."""
    command = f"touch {waiting}; until [ -f {release} ]; do sleep 0.05; done"
    return {"tool_calls": [{"name": "run_command", "input": {"command": command}}]}


def test_a_conflict_is_counted_apart_and_names_each_path_once(
    project: Path, tmp_path: Path
) -> None:
    shared, sandbox = shared_dir(tmp_path)  # seen by the test and the sandboxed command
    waiting, release = shared / "waiting", shared / "release"
    cassette = {
        "t": [
            [write_turn("x.txt", "theirs\n"), hold(waiting, release), finish_turn("x")],
            [write_turn("y.txt", "y\n"), finish_turn("y")],
        ]
    }
    mission = write_mission(tmp_path / "m", [{"id": "t", "title": "T"}], cassette, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    env = {"PD_HOME": str(home)}
    proc = start_run(mission, project, home)
    try:
        wait_for(waiting.exists, timeout=120, what="the agent to hold")
        # Meanwhile the user commits the same new file: the task's merge must conflict.
        (project / "x.txt").write_text("ours\n")
        run_git(project, "add", "x.txt")
        run_git(project, "commit", "-q", "-m", "user adds x.txt")
        release.write_text("")
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out

    rejected = [e for e in events(home) if e["kind"] == "task_rejected"]
    assert [e["conflicts"] for e in rejected] == [["x.txt"]]
    failed = next(e for e in events(home) if e["kind"] == "attempt_failed")
    assert failed["reason"].count("x.txt") == 1, failed["reason"]

    report = json.loads(pd("report", "--json", cwd=home, env=env, check=True).stdout)
    assert (report["conflicts"], report["rejections"]) == (1, 0)
    text = pd("report", cwd=home, env=env, check=True).stdout
    assert "0 rejected by the gate, 1 merge conflict" in " ".join(text.split())
    status = json.loads(pd("status", "--json", cwd=home, env=env, check=True).stdout)
    assert status["merge_rejections"] == {"gate": 0, "conflicts": 1, "flaky": 0}
    shown = " ".join(pd("status", cwd=home, env=env, check=True).stdout.split())
    assert "0 rejected by the gate, 1 merge conflict" in shown


def test_report_prints_gate_output_as_text_not_markup(capsys: pytest.CaptureFixture) -> None:
    from orchestrator.cli.report import print_report

    detail = "FAILED tests/test_x.py::test_add[bold-2] - assert [red]"
    task = {"id": "t", "state": "failed", "attempts": 1, "workers": ["w1"], "failures": []}
    task["rejections"] = [{"attempt": 1, "reason": "gate failed", "detail": detail}]
    print_report({"run_id": "r", "tasks": [task], "rejections": 1, "crashes": [], "respawns": 0})
    shown = "".join(capsys.readouterr().out.split())
    assert "test_add[bold-2]" in shown and "assert[red]" in shown
