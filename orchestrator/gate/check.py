"""``pd gate check``: would this branch, merged onto the target as it is now, pass?

Nothing moves: the answer is for a required status check on a pull request. It is the
same candidate the queue would land (``trees.build``), tested the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.gate.runner import GateResult, GateSlots
from orchestrator.gate.target import Target
from orchestrator.gate.trees import Branch, build


@dataclass
class Verdict:
    """One branch's outcome, as every ``pd gate`` output shows it."""

    branch: str
    status: str  # merged | already-merged | rejected | conflict | passed
    commit: str = ""  # the branch's commit
    reason: str = ""
    conflicts: list[str] = field(default_factory=list)
    tail: str = ""  # the failing output's last lines
    log: str = ""  # where the whole output is

    @property
    def ok(self) -> bool:
        return self.status in ("merged", "already-merged", "passed")


def check_branch(repo: Path, target: Target, branch: Branch, slots: GateSlots) -> Verdict:
    head = target.head()
    built = build(repo, head, [branch], f"pd gate check: {branch.name}")
    if branch.name in built.conflicts:
        paths = built.conflicts[branch.name]
        reason = f"conflicts with {target.name} in: {', '.join(paths)}"
        return Verdict(branch.name, "conflict", branch.commit, reason, conflicts=paths)
    if built.commit is None:
        reason = f"{target.name} already holds its changes"
        return Verdict(branch.name, "already-merged", branch.commit, reason)
    result = slots.run(0, built.commit, f"check-{branch.name}")
    return verdict_of(branch, result, "passed")


def verdict_of(branch: Branch, result: GateResult, success: str) -> Verdict:
    status = success if result.passed else "rejected"
    return Verdict(
        branch.name, status, branch.commit, result.reason, tail=result.tail, log=str(result.log)
    )
