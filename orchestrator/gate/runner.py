"""Where gates run: one worktree per parallel gate, reset to the exact commit it tests.

A slot's worktree is created once and then only reset and cleaned, so a gate run costs
one checkout, not a clone. The gate gets the caller's environment without its secrets
(agents' code runs in it) and, when the policy says so, the sandbox.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.gate import firsttests
from orchestrator.system.procs import run_shell
from orchestrator.system.sandbox import Policy, Sandbox
from orchestrator.system.worktrees import SetupFailed, WorktreeManager
from orchestrator.team.tools import scrub_env

TAIL_LINES = 40
MAX_DEFAULT_PARALLEL = 4


def default_parallel(workers: int | None = None) -> int:
    """Gates at once when nobody said: half the cores (each gate is a test suite, which
    wants cores of its own), at least 1, at most 4, and no more than ``workers`` (a
    run's agents rarely finish work faster than that many gates can take it)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 2
    gates = max(1, min(MAX_DEFAULT_PARALLEL, cores // 2))
    return min(gates, workers) if workers else gates


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str  # why it failed ("" when it passed)
    tail: str  # the output's last lines
    log: Path  # the whole output
    seconds: float
    failed_tests: frozenset[str] = frozenset()  # the tests it names as failed


class GateSlots:
    """``slots`` worktrees under ``root`` that run ``command`` on commits of ``repo``."""

    def __init__(
        self,
        repo: Path,
        root: Path,
        command: str,
        log_dir: Path,
        timeout: float | None = None,
        setup: str | None = None,
        env: Mapping[str, str] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.command, self.timeout, self.log_dir = command, timeout, log_dir
        self.env = {**scrub_env(os.environ), **(env or {})}
        self.policy = policy or Policy()
        self.worktrees = WorktreeManager(repo, root, setup, self.env, policy=self.policy)
        log_dir.mkdir(parents=True, exist_ok=True)

    def run(
        self, slot: int, commit: str, label: str, run_first: frozenset[str] = frozenset()
    ) -> GateResult:
        """Test ``commit`` in worktree ``slot``, starting with the tests ``run_first``
        names where the runner allows it (``firsttests``); ``label`` names its log file."""
        name = re.sub(r"[^\w.-]", "_", label)
        log = self.log_dir / f"gate-{name}.log"
        try:
            path = self.worktrees.prepare(f"gate-{slot}", commit, None)
        except SetupFailed as exc:
            reason = f"setup failed in the gate's worktree: {exc.command}"
            return GateResult(False, reason, exc.tail, log, 0.0)
        result = run_shell(
            self.command,
            cwd=path,
            env=firsttests.first(path, run_first, self.env),
            timeout=self.timeout,
            output_path=log,
            sandbox=Sandbox(self.policy, path),
        )
        if result.timed_out:
            reason = f"the tests timed out after {self.timeout:g}s: {self.command}"
        elif result.returncode != 0:
            reason = f"the tests failed (exit {result.returncode}): {self.command}"
        else:
            reason = ""
        failed = firsttests.failed_in_log(log) if reason else frozenset()
        return GateResult(not reason, reason, result.tail(TAIL_LINES), log, result.seconds, failed)

    def close(self) -> None:
        self.worktrees.remove_all()
