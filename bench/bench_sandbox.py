"""What the sandbox costs: a no-op command through ``run_shell`` with and without bwrap.

    python bench/bench_sandbox.py [--runs N]

Both columns run the same ``true`` through the same ``run_shell`` in a real pd-shaped
worktree (a git worktree on a task branch, the checkout and the worktree root hidden),
so the difference is the sandbox alone. Prints medians, p90s, the overhead per command
and the ratio; the goal is an overhead of at most 20 ms per command. Never fails on a
slow machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import new_repo, pct, run_git, say
from orchestrator.system.procs import run_shell
from orchestrator.system.sandbox import Sandbox, make_policy, unavailable_reason

GOAL_MS = 20.0


def _worktree(base: Path) -> tuple[Path, Path]:
    repo = new_repo(base / "repo", "a.txt")
    tree = base / "worktrees" / "w1"
    run_git(repo, "worktree", "add", "-q", "-b", "pd/bench/t1", str(tree))
    return repo, tree


def _times(tree: Path, sandbox: Sandbox | None, runs: int) -> list[float]:
    env = dict(os.environ)
    run_shell("true", tree, env, sandbox=sandbox)  # warm caches once
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = run_shell("true", tree, env, sandbox=sandbox)
        samples.append((time.perf_counter() - start) * 1000)
        if not result.ok:
            raise SystemExit(f"the no-op failed: {result.output}")
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"no sandbox to measure: {reason}")
    with tempfile.TemporaryDirectory(prefix="pd-bench-sandbox-") as tmp:
        repo, tree = _worktree(Path(tmp))
        hidden = [repo, tree.parent]
        rows = [("plain", None)]
        for network in (True, False):
            policy = make_policy("bwrap", network=network, hidden=hidden)
            label = "bwrap" if network else "bwrap, network off"
            rows.append((label, Sandbox(policy, tree, "pd/bench/t1")))
        say(f"no-op command through run_shell, {args.runs} runs each (ms)")
        say(f"{'':22} {'median':>8} {'p90':>8} {'overhead':>9} {'ratio':>6}")
        base = 0.0
        for label, sandbox in rows:
            samples = _times(tree, sandbox, args.runs)
            median, p90 = pct(samples, 0.5), pct(samples, 0.9)
            base = base or median
            extra = median - base
            say(f"{label:22} {median:8.1f} {p90:8.1f} {extra:9.1f} {median / base:6.2f}")
        say(f"goal: overhead <= {GOAL_MS:g} ms per command (median, network on)")


if __name__ == "__main__":
    main()
