"""One live run per target branch (issue 9, item 13): a second run on the same branch is
refused up front with a message naming the live run, never both doing the work."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import BadInput
from orchestrator.system.targetlock import TargetLock, live_run
from tests.conftest import (
    finish_turn,
    hold_turn,
    pd,
    run_git,
    shared_dir,
    write_mission,
    write_turn,
)
from tests.test_e2e import run_dir, start_run, state, wait_for


def test_the_lock_names_its_holder_and_is_free_once_released(git_repo: Path) -> None:
    first = TargetLock(git_repo, "main")
    first.acquire("run-1", Path("/work/space"))
    assert live_run(git_repo, "main") == {
        "run": "run-1",
        "pid": __import__("os").getpid(),
        "workspace": "/work/space",
    }
    assert live_run(git_repo, "other") is None
    with pytest.raises(BadInput, match=r"run run-1 .* is working on branch 'main'"):
        TargetLock(git_repo, "main").acquire("run-2", Path("/elsewhere"))
    first.release()
    assert live_run(git_repo, "main") is None
    second = TargetLock(git_repo, "main")
    second.acquire("run-2", Path("/elsewhere"))
    second.release()
    assert run_git(git_repo, "status", "--porcelain") == ""


@pytest.mark.slow
def test_a_second_run_on_a_live_branch_is_refused_naming_the_live_run(
    project: Path, tmp_path: Path
) -> None:
    shared, sandbox = shared_dir(tmp_path)
    go = shared / "go"
    cassette = {"a": [[write_turn("a.txt", "a"), hold_turn(go), finish_turn()]]}
    mission = write_mission(tmp_path / "m", [{"id": "a", "title": "a"}], cassette, sandbox=sandbox)
    home = tmp_path / "home"
    home.mkdir()
    proc = start_run(mission, project, home)
    wait_for(lambda: state(home).get("status") == "running", what="first run live")
    first = run_dir(home).name
    other = tmp_path / "other"
    other.mkdir()
    for extra in ([], ["--detach"]):
        result = pd(
            "run",
            str(mission),
            "--repo",
            str(project),
            *extra,
            cwd=other,
            env={"PD_HOME": str(other)},
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert first in result.stderr and "pd abort" in result.stderr
        assert not (other / ".pd").exists()  # nothing created
    go.touch()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert live_run(project, "main") is None  # the branch is free again
    again = pd(
        "validate", str(mission), "--repo", str(project), cwd=other, env={"PD_HOME": str(other)}
    )
    assert again.returncode == 0, again.stdout + again.stderr
