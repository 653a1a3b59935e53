"""Messages between the coordinator and the merger: batches to merge and gate, their
results, and (with parallel gates) when to land or cancel a tested run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.wire.base import Message


@dataclass
class MergeRequest(Message):
    """Merge ``commit`` into the target branch if the merged tree passes the gate."""

    task_id: str
    attempt: int
    branch: str
    commit: str
    title: str


@dataclass
class MergeResult(Message):
    """Outcome of a ``MergeRequest``: ``merged`` with the new ``head``, or why not."""

    task_id: str
    attempt: int
    merged: bool
    head: str = ""
    reason: str = ""
    conflicts: list[str] = field(default_factory=list)
    log_tail: str = ""
    seconds: float = 0.0
    # The merge would change nothing: the target already holds the same tree. Not merged
    # (nothing of the branch lands), but its work is there.
    already_merged: bool = False
    # pd's machinery failed (git, the disk), not the gate: the merge is tried again.
    infrastructure: bool = False


@dataclass
class MergeBatch(Message):
    """Merge ``items`` (``MergeRequest`` fields, as dicts) onto the target head as ONE
    commit, and land it only if that tree passes the gate: one gate run for them all.
    ``run_id`` is the merge queue's (``gate.MergeQueue``).

    With parallel gates (``land`` False) the merger only tests: the batch is built on
    ``base_run``'s tree (0: the target head), the result names the tested ``tree``, and
    the target moves when the coordinator sends ``LandRun``."""

    run_id: int
    items: list[dict[str, Any]]
    base_run: int = 0
    land: bool = True
    run_first: list[str] = field(default_factory=list)  # tests that failed: run them first


@dataclass
class LandRun(Message):
    """Move the target to ``run_id``'s tested tree, by compare-and-swap from the commit
    that tree was built on (the merge queue said ``Land``)."""

    run_id: int


@dataclass
class CancelRun(Message):
    """Stop ``run_id``'s gate: what it was stacked on failed or left, so its result can no
    longer mean anything. No answer comes."""

    run_id: int


@dataclass
class RunLanded(Message):
    """What a ``LandRun`` did: ``moved`` (the target is at ``head``), or not, and why
    (someone else moved the target since the tree was built)."""

    run_id: int
    moved: bool
    head: str = ""
    reason: str = ""


@dataclass
class BatchResult(Message):
    """What a ``MergeBatch`` did.

    Before the gate, items can leave: ``conflicts`` (task -> paths), ``refused`` (task ->
    why: unknown commit, a symlink or plumbing file), ``already`` (the target holds the
    same tree), ``landed_before`` (its commit is in the target) and ``deferred``. When any left, the
    gate did not run (``gated`` False): the queue plans the others again. Otherwise
    ``passed`` says what the gate said; a passing batch has landed, at ``head`` (with
    ``land`` False it has not: ``tree`` is the commit that passed, waiting for ``LandRun``)."""

    run_id: int
    base: str = ""  # the target head the batch was built on
    gated: bool = False
    passed: bool = False
    head: str = ""
    tree: str = ""  # the commit the gate ran on (parallel gates: to land when told)
    failed_tests: list[str] = field(default_factory=list)  # named in the gate's output
    reason: str = ""
    log_tail: str = ""
    seconds: float = 0.0
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    landed_before: list[str] = field(default_factory=list)
    # Conflict only with a task merged before it in this batch, not with the head: it
    # waits for that one to land, then is tried on the new head.
    deferred: list[str] = field(default_factory=list)
    # pd's machinery failed (git, the disk), not the gate: the batch is tried again.
    infrastructure: bool = False
