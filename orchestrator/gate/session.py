"""One ``pd gate`` call: the repository, the target, the test command and where gates run.

Gate worktrees and logs live in the repository's git dir (``.git/pd/gate…``), so a gate
never leaves files in the user's checkout; the worktrees go when the call ends (or, after
a kill, when the next call starts), the logs stay for a CI job to upload. One gate runs
on a repository at a time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.errors import BadInput
from orchestrator.gate import branches
from orchestrator.gate.check import Verdict, check_branch
from orchestrator.gate.runner import GateSlots
from orchestrator.gate.target import LocalTarget, RemoteTarget, Target
from orchestrator.spec.testcommand import detect_test_command
from orchestrator.system import gitutil


@dataclass
class GateSetup:
    repo: Path
    target: Target
    remote: str | None
    test_command: str
    test_reason: str  # "given" or why it was detected
    slots_root: Path
    log_dir: Path
    timeout: float | None
    lock: FileLock | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        repo: Path,
        into: str,
        test: str | None,
        remote: str | None,
        timeout: float | None,
    ) -> GateSetup:
        repo = repo.resolve()
        if not repo.is_dir() or not gitutil.is_git_repo(repo):
            fix = "run pd gate inside a repository or pass --repo"
            raise BadInput(str(repo), "not a git repository", fix, "--repo")
        root = gitutil.git(repo, "rev-parse", "--show-toplevel")
        repo = Path(root)
        target: Target = RemoteTarget(repo, remote, into) if remote else LocalTarget(repo, into)
        command, reason = (test, "given") if test else _detected(repo, target)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        pd_dir = gitutil.common_dir(repo) / "pd"
        pd_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(pd_dir / "gate.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            fix = "wait for the other `pd gate` on this repository to finish"
            raise BadInput(str(repo), "another pd gate is running here", fix) from None
        return cls(
            repo=repo,
            target=target,
            remote=remote,
            test_command=command,
            test_reason=reason,
            slots_root=pd_dir / "gate-worktrees",
            log_dir=pd_dir / "gate-logs" / f"{stamp}-{os.getpid()}",
            timeout=timeout,
            lock=lock,
        )

    def slots(self) -> GateSlots:
        """The gate worktrees, none left from a gate that was killed."""
        slots = GateSlots(
            self.repo, self.slots_root, self.test_command, self.log_dir, timeout=self.timeout
        )
        slots.close()
        return slots

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _detected(repo: Path, target: Target) -> tuple[str, str]:
    """The test command of the target's tree, as ``pd run`` detects one."""
    found = detect_test_command(repo, target.head())
    if found is None:
        fix = "pass --test CMD (the command that runs the project's tests)"
        problem = f"no test command given, and none found in {target.name}'s files"
        raise BadInput("pd gate", problem, fix, "--test")
    return found.command, f"detected: {found.reason}"


def check(setup: GateSetup, name: str) -> list[Verdict]:
    """``pd gate check``: one branch merged onto the target, tested; nothing moves."""
    found = branches.resolve(setup.repo, [name], setup.remote)
    if len(found) != 1:
        fix = "name one branch (a glob may match only one)"
        raise BadInput("pd gate check", f"{name!r} matches {len(found)} branches", fix)
    branch = found[0]
    slots = setup.slots()
    try:
        return [check_branch(setup.repo, setup.target, branch, slots)]
    finally:
        slots.close()
