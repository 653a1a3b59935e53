"""The merge ratchet: work reaches the target branch only if the merged tree passes the gate.

Conflicts are found with ``git merge-tree --write-tree`` (no worktree churn); the gate runs
on the exact candidate commit in a dedicated integration worktree; the target ref then
moves by compare-and-swap, so a commit someone else made meanwhile is never overwritten.
With one gate (``gate.parallel`` 1) a batch that passes lands at once; with more, the
merger only tests and lands when told (``lanes``).
"""

from __future__ import annotations

import os
import re
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.engine import landing, sigterm
from orchestrator.engine.child import creator_alive, serve
from orchestrator.errors import BadInput, GitError
from orchestrator.gate import firsttests
from orchestrator.gate.target import sync_checkout
from orchestrator.gate.trees import Branch, build, merged_tree
from orchestrator.record import processlog
from orchestrator.system import gitutil, oshints
from orchestrator.system.procs import run_shell
from orchestrator.system.sandbox import Policy, Sandbox
from orchestrator.system.worktrees import SetupFailed, WorktreeManager
from orchestrator.team.tools import scrub_env
from orchestrator.wire.messages import (
    BatchResult,
    MergeBatch,
    MergeRequest,
    MergeResult,
    Message,
    Ready,
)

MAX_CAS_TRIES = 3
TAIL_LINES = 40


@dataclass
class MergerConfig:
    """Everything the merger process needs; plain JSON types so it can cross a spawn."""

    repo: str
    target_branch: str
    integration_path: str
    gate_command: str
    gate_timeout: float
    log_dir: str
    setup: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    sync_checkout: bool = True
    sandbox: dict[str, Any] = field(default_factory=dict)  # a sandbox.Policy, as a dict
    symlinks: str = "none"  # "inside": symlinks within the repository may land
    git_files: list[str] = field(default_factory=list)  # plumbing files that may change
    parallel: int = 1  # gates at once (see ``lanes``); 1: land each batch that passes
    lane_ports: list[int] = field(default_factory=list)  # PD_PORT_BASE of gates 2, 3, …


class GateFailure(NamedTuple):
    """How a gate run failed: why, the output's tail, and the tests it named."""

    reason: str
    tail: str
    tests: tuple[str, ...] = ()


class Merger:
    """Merges one request at a time into ``target_branch`` through conflict check and gate."""

    def __init__(self, config: MergerConfig) -> None:
        self.config = config
        self.repo = Path(config.repo)
        self.ref = f"refs/heads/{config.target_branch}"
        if not gitutil.is_git_repo(self.repo):
            raise BadInput(config.repo, "not a git repository", "point repo at one", "repo")
        if gitutil.rev_parse(self.repo, self.ref) is None:
            fix = "create the branch or pick another target"
            raise BadInput(config.repo, f"no branch {config.target_branch}", fix, "target_branch")
        integration = Path(config.integration_path)
        # Gates run code agents wrote: they get our environment without its secrets.
        self.env = {**scrub_env(os.environ), **config.env}
        self.policy = Policy.from_dict(config.sandbox)
        self.worktrees = WorktreeManager(
            self.repo, integration.parent, config.setup, self.env, policy=self.policy
        )
        self.integration_name = integration.name
        self.log_dir = Path(config.log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def merge(self, req: MergeRequest) -> MergeResult:
        """One request, as a batch of one (what tests and single merges use)."""
        batch = self.merge_batch(MergeBatch(0, [req.to_dict()]))
        return single_result(req, batch, self.config.target_branch)

    def merge_batch(self, batch: MergeBatch) -> BatchResult:
        """Try to land ``batch``; never raises: an unexpected error is the merger's own
        (infrastructure), never a rejection of the work."""
        start = time.monotonic()
        items = [MergeRequest(**{k: v for k, v in i.items() if k != "type"}) for i in batch.items]
        try:
            result = self._merge_batch(batch.run_id, items, frozenset(batch.run_first))
        except Exception as exc:  # git or the disk, not the branches: tried again
            names = ", ".join(i.task_id for i in items)
            self.log(f"error merging {names}:\n{traceback.format_exc()}")
            result = BatchResult(batch.run_id, reason=f"merger error: {exc}", infrastructure=True)
        result.seconds = time.monotonic() - start
        return result

    def _merge_batch(
        self, run_id: int, items: list[MergeRequest], run_first: frozenset[str] = frozenset()
    ) -> BatchResult:
        out = BatchResult(run_id)
        commits = self.commits(items, out)
        for round_ in range(MAX_CAS_TRIES):
            old = self.head()
            candidate = self.pretest(out, items, commits, old, old)
            if candidate is None:
                return out  # the queue plans the others again
            out.gated = True
            failed = self.gate(run_id, items, candidate, round_, run_first=run_first)
            if failed is not None:
                out.reason, out.log_tail = failed.reason, failed.tail
                out.failed_tests = list(failed.tests)
                if len(items) == 1:
                    self.keep(items[0])
                self.log(f"run {run_id} ({_names(items)}): gate failed: {out.reason}")
                return out
            with sigterm.held():  # never a moved ref with a checkout left behind
                if not creator_alive():  # the coordinator died during the gate
                    out.gated, out.infrastructure = False, True
                    out.reason = "the coordinator is gone: nothing is moved without it"
                    return out
                if self.move(items, candidate, old):
                    self.sync(old, candidate)
                    out.passed, out.head = True, candidate
                    self.log(f"run {run_id} ({_names(items)}): merged, head {out.head[:12]}")
                    return out
            self.log(f"run {run_id}: {self.ref} moved during the gate; retrying on new head")
        out.gated, out.infrastructure = False, True
        out.reason = f"{self.config.target_branch} kept moving; gave up after {MAX_CAS_TRIES} tries"
        return out

    def commits(self, items: list[MergeRequest], out: BatchResult) -> dict[str, str]:
        """Each item's commit, by task; an unknown one is refused in ``out``."""
        commits: dict[str, str] = {}
        names = [req.commit or req.branch for req in items]
        found = gitutil.resolve(self.repo, *(f"{name}^{{commit}}" for name in names))
        for req, name, commit in zip(items, names, found, strict=True):
            if commit is None:
                out.refused[req.task_id] = f"unknown commit {name}"
            else:
                commits[req.task_id] = commit
        return commits

    def pretest(
        self,
        out: BatchResult,
        items: list[MergeRequest],
        commits: dict[str, str],
        base: str,
        head: str,
    ) -> str | None:
        """The batch merged onto ``base`` as one commit, to gate; None when some items
        left before the gate (``out`` says which and why). ``base`` is the target
        ``head``, or (stacked) the tree of a run not landed yet: then what clashes only
        with that tree, or is already in it, waits (``deferred``) rather than leaves."""
        out.base, out.deferred = base, []
        out.landed_before = [
            t for t, c in commits.items() if gitutil.is_ancestor(self.repo, c, head)
        ]
        branches = [Branch(t, c) for t, c in commits.items() if t not in out.landed_before]
        built = build(self.repo, base, branches, _message(items))
        out.conflicts, out.already = built.conflicts, built.already
        stacked = base != head
        for task in list(out.conflicts):  # with the head, or only with a batch-mate?
            if (len(branches) > 1 or stacked) and merged_tree(self.repo, head, commits[task])[0]:
                out.deferred.append(task)
                del out.conflicts[task]
        if stacked:  # the tree below holds it, but it has not landed
            out.deferred += out.already
            out.already = []
        if built.commit is not None and not (out.refused or out.conflicts or out.already):
            out.refused = self._refusals(base, built.commit, branches)
        left = out.refused or out.conflicts or out.already or out.landed_before
        if left or out.deferred:
            self._left(items, out)
            return None
        assert built.commit is not None  # every item merged in
        return built.commit

    def _refusals(self, old: str, candidate: str, branches: list[Branch]) -> dict[str, str]:
        """What must not land (symlinks, git plumbing), by branch: checked on the whole
        candidate, then, only if it is refused, on each branch alone."""
        config = self.config
        why = landing.refusal(self.repo, old, candidate, config.symlinks, config.git_files)
        if why is None:
            return {}
        if len(branches) == 1:
            return {branches[0].name: why}
        found = {}
        for branch in branches:
            alone = build(self.repo, old, [branch], "pd: landing check").commit
            if alone is not None:
                reason = landing.refusal(self.repo, old, alone, config.symlinks, config.git_files)
                if reason:
                    found[branch.name] = reason
        return found or {b.name: why for b in branches}  # only together: none lands

    def _left(self, items: list[MergeRequest], out: BatchResult) -> None:
        for req in items:
            if req.task_id in out.conflicts or req.task_id in out.refused:
                self.keep(req)
        self.log(
            f"run {out.run_id} ({_names(items)}): before the gate, conflicts "
            f"{sorted(out.conflicts)}, refused {sorted(out.refused)}, already "
            f"{out.already + out.landed_before}"
        )

    def head(self) -> str:
        head = gitutil.rev_parse(self.repo, self.ref)
        if head is None:
            raise GitError(["rev-parse", self.ref], "target branch disappeared")
        return head

    def gate(
        self,
        run_id: int,
        items: list[MergeRequest],
        candidate: str,
        round_: int = 0,
        worktree: str = "",
        on_start: Callable[[int], None] | None = None,
        port_base: int = 0,
        run_first: frozenset[str] = frozenset(),
    ) -> GateFailure | None:
        """Run the gate on ``candidate`` in integration worktree ``worktree`` (default:
        the first), starting with the tests ``run_first`` names where the runner allows it
        (``gate.firsttests``); how it failed, or None. ``on_start`` hears the gate's
        process group (to cancel it); ``port_base``, when given, its ``PD_PORT_BASE``."""
        suffix = f"-retry{round_}" if round_ else ""
        only = items[0]
        safe = re.sub(r"[^\w.-]", "_", only.task_id)
        name = f"{safe}-{only.attempt}" if len(items) == 1 else f"run{run_id}"
        log_path = self.log_dir / f"gate-{name}{suffix}.log"
        try:
            path = self.worktrees.prepare(worktree or self.integration_name, candidate, None)
        except SetupFailed as exc:
            return GateFailure(f"integration setup failed: {exc.command}", exc.tail)
        env = {**self.env, "PD_PORT_BASE": str(port_base)} if port_base else self.env
        result = run_shell(
            self.config.gate_command,
            cwd=path,
            env=firsttests.first(path, run_first, env),
            timeout=self.config.gate_timeout,
            output_path=log_path,
            sandbox=Sandbox(self.policy, path),  # detached: the gate moves no ref
            on_start=on_start,
        )
        if result.timed_out:
            reason = f"gate timed out after {self.config.gate_timeout:g}s"
            return GateFailure(reason, result.tail(TAIL_LINES))
        if result.returncode != 0:
            reason = f"gate failed (exit {result.returncode}): {self.config.gate_command}"
            tests = sorted(firsttests.failed_in_log(log_path))
            return GateFailure(reason, result.tail(TAIL_LINES), tuple(tests))
        return None

    def move(self, items: list[MergeRequest], new: str, old: str) -> bool:
        """Compare-and-swap the target from ``old`` to ``new``; False if it moved meanwhile."""
        message = f"pd: merge {_names(items)}"
        env = gitutil.identity_env()
        code, _out, err = gitutil.git_full(
            self.repo, "update-ref", "-m", message, self.ref, new, old, env=env
        )
        if code == 0:
            return True
        if self.head() != old:
            return False
        raise GitError(["git", "update-ref", self.ref, new, old], err, code)

    def sync(self, old: str, new: str) -> None:
        """Bring the user's checkout of the target along (never one of pd's worktrees)."""
        if not self.config.sync_checkout:
            return
        branch, ours = self.config.target_branch, self.worktrees.root
        if warning := sync_checkout(self.repo, branch, old, new, skip_under=ours):
            self.log(warning)

    def keep(self, req: MergeRequest) -> None:
        """Nothing is lost: the next attempt resets the task branch, so the rejected
        commit stays reachable under ``refs/pd/rejected/<branch>/<attempt>``."""
        if req.commit and gitutil.rev_parse(self.repo, f"{req.commit}^{{commit}}"):
            ref = f"refs/pd/rejected/{req.branch}/{req.attempt}"
            gitutil.git_full(self.repo, "update-ref", ref, req.commit)

    def log(self, text: str) -> None:
        processlog.write(self.log_dir / "merger.log", "merger", None, text)


def _names(items: list[MergeRequest]) -> str:
    return ", ".join(i.task_id for i in items)


def _message(items: list[MergeRequest]) -> str:
    """The landed commit's message: the task and its title, or the tasks of a batch."""
    if len(items) == 1:
        return f"pd: merge {items[0].task_id}: {items[0].title}"
    lines = "\n".join(f"- {i.task_id}: {i.title}" for i in items)
    return f"pd: merge {len(items)} tasks: {_names(items)}\n\n{lines}"


def single_result(req: MergeRequest, batch: BatchResult, target: str) -> MergeResult:
    """A batch of one, told as the ``MergeResult`` of its request."""
    task = req.task_id
    result = MergeResult(task, req.attempt, False, seconds=batch.seconds)
    if batch.infrastructure:
        result.reason, result.infrastructure = batch.reason, True
    elif task in batch.refused:
        result.reason = batch.refused[task]
    elif task in batch.conflicts:
        result.conflicts = batch.conflicts[task]
        result.reason = f"conflict with {target} in: {', '.join(result.conflicts)}"
    elif task in batch.already:
        result.head, result.already_merged = batch.base, True
        result.reason = f"{target} already holds these changes"
    elif task in batch.landed_before:
        result.merged, result.head, result.reason = True, batch.base, "no-op: already in target"
    elif batch.passed:
        result.merged, result.head = True, batch.head
    else:
        result.reason, result.log_tail = batch.reason, batch.log_tail
    return result


def merger_main(conn: Any, config: dict[str, Any]) -> None:
    """Process entry point: answer MergeRequests on ``conn`` until Shutdown or EOF."""
    # The coordinator decides what Ctrl-C means; a terminal's SIGINT reaches the whole
    # process group, and a merger that died on it would abandon a half-run gate.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, sigterm.on_sigterm)
    oshints.name_thread("pd-merger")
    merger: Merger | None = None
    error = "merger boot interrupted"
    try:
        merger = Merger(MergerConfig(**config))
        error = ""
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        # Always answer, so the coordinator knows we booted even when boot failed.
        conn.send_bytes(Ready(worker_id="merger", pid=os.getpid(), error=error).to_bytes())
    if merger is None:
        return

    if merger.config.parallel > 1:
        from orchestrator.engine.lanes import serve_lanes  # it builds on this module

        serve_lanes(conn, merger)
        return

    def answer(message: Message) -> Message | None:
        if isinstance(message, MergeBatch):
            return merger.merge_batch(message)
        return merger.merge(message) if isinstance(message, MergeRequest) else None

    serve(conn, answer)
