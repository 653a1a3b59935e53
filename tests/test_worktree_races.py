"""Worktree creation on one repository from many processes at once (issue 9, item 3).

git itself fails now and then when worktrees are added while others are added, listed or
checked out ("failed to read .git/worktrees/…/commondir"). Five workers starting at
once, twenty times over: not one attempt may fail on worktree creation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import make_repo

WORKERS = 5
ROUNDS = 20

CHURN = """
import sys, time
from pathlib import Path
from orchestrator.system.worktrees import WorktreeManager
repo, root, name, release, rounds = sys.argv[1:6]
while not Path(release).exists():
    time.sleep(0.001)
manager = WorktreeManager(Path(repo), Path(root))
for round_ in range(int(rounds)):
    # A fresh worktree each round (as a new run's workers make), reset once (a next task).
    manager.prepare(name, "main", f"pd/r{round_}/{name}")
    manager.prepare(name, "main", f"pd/r{round_}/{name}-next")
    manager.remove(name)
"""


def test_workers_starting_at_once_never_fail_on_worktree_creation(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {f"f{i}.py": f"x = {i}\n" for i in range(50)})
    release = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHURN,
                str(repo),
                str(tmp_path / "wt"),
                f"w{i}",
                str(release),
                str(ROUNDS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(WORKERS)
    ]
    release.touch()
    failures = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(out.strip().splitlines()[-1])
    assert failures == []
