"""The merger's fixed cost per merge: the git work around a gate that does nothing.

Run ``python bench/bench_merge_cost.py [--quick]``. It asserts nothing. A real
``Merger`` lands one-commit tasks, one at a time, on a repository of 2,000 files whose
target branch is checked out in the user's checkout (so the checkout is brought along),
with the gate ``true``: what is left is pd's own cost. Printed beside it, measured in the
same run: the floor any merge pays, one plain ``git update-ref`` compare-and-swap, and
how many git processes a merge starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import new_repo, run_git, say

from orchestrator.engine.merger import Merger, MergerConfig
from orchestrator.wire.messages import MergeRequest


class Counted:
    """Counts the git processes started while it is installed."""

    def __init__(self) -> None:
        self.count = 0
        self._run = subprocess.run

    def __enter__(self) -> Counted:
        def run(args: object, *rest: object, **kw: object) -> object:
            if isinstance(args, list) and args and args[0] == "git":
                self.count += 1
            return self._run(args, *rest, **kw)  # type: ignore[arg-type]

        subprocess.run = run  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run = self._run


def big_repo(path: Path, files: int) -> Path:
    """``main`` with ``files`` files in folders of 100."""
    new_repo(path)
    for i in range(files):
        folder = path / f"d{i // 100}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{i}.txt").write_text(f"{i}\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "files")
    return path


def task_commit(repo: Path, n: int) -> str:
    """A branch ``t<n>``, one commit on main adding one file, made without a checkout."""
    index = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "bench-index")}
    blob = run_git(repo, "hash-object", "-w", "--stdin", stdin=f"task {n}\n".encode())
    base = run_git(repo, "rev-parse", "main")

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], env=index, capture_output=True)
        return done.stdout.decode().strip()

    git("read-tree", base)
    git("update-index", "--add", "--cacheinfo", f"100644,{blob},t{n}.txt")
    commit = run_git(repo, "commit-tree", git("write-tree"), "-p", base, "-m", f"t{n}")
    run_git(repo, "update-ref", f"refs/heads/t{n}", commit)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer merges")
    args = parser.parse_args(argv)
    merges = 10 if args.quick else 40
    with tempfile.TemporaryDirectory(prefix="pd-merge-cost-") as raw:
        tmp = Path(raw)
        repo = big_repo(tmp / "repo", 2000)
        config = MergerConfig(
            repo=str(repo),
            target_branch="main",
            integration_path=str(tmp / "worktrees" / "integration"),
            gate_command="true",
            gate_timeout=60,
            log_dir=str(tmp / "logs"),
        )
        merger = Merger(config)
        merger.merge(MergeRequest("warm", 1, "t0", task_commit(repo, 0), "warm up"))
        seconds, processes, floor = [], [], []
        last = run_git(repo, "rev-parse", "main")
        run_git(repo, "update-ref", "refs/heads/floor", last)
        for n in range(1, merges + 1):
            commit = task_commit(repo, n)
            with Counted() as counted:
                began = time.perf_counter()
                result = merger.merge(MergeRequest(f"t{n}", 1, f"t{n}", commit, "task"))
                seconds.append(time.perf_counter() - began)
            if not result.merged:
                raise RuntimeError(f"merge {n} failed: {result.reason}")
            processes.append(counted.count)
            began = time.perf_counter()  # the same move, as a bare compare-and-swap
            run_git(repo, "update-ref", "refs/heads/floor", commit, last)
            floor.append(time.perf_counter() - began)
            last = commit
    cost, base = statistics.median(seconds), statistics.median(floor)
    say(f"pd merge cost bench ({merges} merges, 2,000-file repository, gate `true`)")
    say(f"  merge, median              {cost * 1e3:7.1f} ms")
    say(f"  git update-ref, median     {base * 1e3:7.1f} ms  (the floor)")
    say(f"  merge / floor              {cost / base:7.1f}x")
    say(f"  git processes per merge    {statistics.median(processes):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
