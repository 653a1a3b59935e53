"""The suite's own guard: an orphan a test left (reparented to init, so no parent links it
to the test) is killed by the sweep of that test's tmp path, and nothing else is."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from tests.conftest import sweep


def orphan(cwd: Path) -> psutil.Process:
    """A ``sleep`` whose shell has exited: its parent is init (or a subreaper), not us."""
    out = subprocess.run(
        ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    proc = psutil.Process(int(out.stdout))
    assert proc.ppid() != psutil.Process().pid
    return proc


def test_the_sweep_kills_an_orphan_working_in_the_tests_folder_and_no_other(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (tmp_path / "work").mkdir()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    inside, outside = orphan(tmp_path / "work"), orphan(elsewhere)
    try:
        assert sweep(tmp_path) == [inside.pid]
        assert not inside.is_running() or inside.status() == psutil.STATUS_ZOMBIE
        assert outside.is_running()
    finally:
        outside.kill()
