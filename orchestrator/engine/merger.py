"""The merge ratchet: work reaches the target branch only if the merged tree passes the gate.

Conflicts are found with ``git merge-tree --write-tree`` (no worktree churn); the gate runs
on the exact candidate commit in a dedicated integration worktree; the target ref then
moves by compare-and-swap, so a commit someone else made meanwhile is never overwritten.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.engine import landing
from orchestrator.engine.pool import creator_alive, serve
from orchestrator.errors import BadInput, GitError
from orchestrator.gate.target import sync_checkout
from orchestrator.system import gitutil, oshints
from orchestrator.system.procs import kill_all_running, run_shell
from orchestrator.system.sandbox import Policy, Sandbox
from orchestrator.system.worktrees import SetupFailed, WorktreeManager
from orchestrator.team.tools import scrub_env
from orchestrator.wire.messages import MergeRequest, MergeResult, Ready

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
        """Try to merge ``req``; never raises: an unexpected error becomes a rejection."""
        start = time.monotonic()
        try:
            result = self._merge(req)
        except Exception as exc:  # git or the disk, not the branch: tried again
            self._log(f"error merging {req.task_id}:\n{traceback.format_exc()}")
            reason = f"merger error: {exc}"
            result = MergeResult(
                req.task_id, req.attempt, False, reason=reason, infrastructure=True
            )
        result.seconds = time.monotonic() - start
        return result

    def _merge(self, req: MergeRequest) -> MergeResult:
        commit = gitutil.rev_parse(self.repo, f"{req.commit or req.branch}^{{commit}}")
        if commit is None:
            return self._rejected(req, f"unknown commit {req.commit or req.branch}")
        for round_ in range(MAX_CAS_TRIES):
            old = self._head()
            if gitutil.is_ancestor(self.repo, commit, old):
                return self._merged(req, old, "no-op: already in target")
            candidate, conflicts = self._candidate(req, old, commit)
            if candidate is None:
                reason = f"conflict with {self.config.target_branch} in: {', '.join(conflicts)}"
                return self._rejected(req, reason, conflicts=conflicts)
            if self._tree(candidate) == self._tree(old):
                return self._already(req, old)
            refused = landing.refusal(
                self.repo, old, candidate, self.config.symlinks, self.config.git_files
            )
            if refused:
                return self._rejected(req, refused)
            rejection = self._gate(req, candidate, round_)
            if rejection is not None:
                return rejection
            with _no_sigterm():  # never a moved ref with a checkout left behind
                if not creator_alive():  # the coordinator died during the gate
                    reason = "the coordinator is gone: nothing is moved without it"
                    return MergeResult(req.task_id, req.attempt, merged=False, reason=reason)
                if self._move(req, candidate, old):
                    self._sync_checkout(old, candidate)
                    return self._merged(req, candidate)
            self._log(f"{req.task_id}: {self.ref} moved during the gate; retrying on new head")
        reason = f"{self.config.target_branch} kept moving; gave up after {MAX_CAS_TRIES} tries"
        return self._rejected(req, reason)

    def _head(self) -> str:
        head = gitutil.rev_parse(self.repo, self.ref)
        if head is None:
            raise GitError(["rev-parse", self.ref], "target branch disappeared")
        return head

    def _tree(self, commit: str) -> str:
        return gitutil.git(self.repo, "rev-parse", f"{commit}^{{tree}}")

    def _candidate(self, req: MergeRequest, old: str, commit: str) -> tuple[str | None, list[str]]:
        """The commit to gate: ``commit`` itself (fast-forward) or a fresh merge commit.

        Returns (None, conflicting paths) when the two sides do not merge cleanly.
        """
        if gitutil.is_ancestor(self.repo, old, commit):
            return commit, []
        code, out, err = gitutil.merge_tree(self.repo, old, commit)
        if code not in (0, 1):
            raise GitError(["git", "merge-tree", "--write-tree", old, commit], err, code)
        tree, *paths = out.split("\0")
        if code == 1:
            return None, list(dict.fromkeys(p for p in paths if p))
        message = f"pd: merge {req.task_id}: {req.title}"
        env = gitutil.identity_env()
        merge = gitutil.git(
            self.repo, "commit-tree", tree, "-p", old, "-p", commit, "-m", message, env=env
        )
        return merge, []

    def _gate(self, req: MergeRequest, candidate: str, round_: int) -> MergeResult | None:
        """Run the gate on ``candidate``; a rejection, or None when it passed."""
        name = re.sub(r"[^\w.-]", "_", req.task_id)
        suffix = f"-retry{round_}" if round_ else ""
        log_path = self.log_dir / f"gate-{name}-{req.attempt}{suffix}.log"
        try:
            path = self.worktrees.prepare(self.integration_name, candidate, None)
        except SetupFailed as exc:
            return self._rejected(req, f"integration setup failed: {exc.command}", tail=exc.tail)
        result = run_shell(
            self.config.gate_command,
            cwd=path,
            env=self.env,
            timeout=self.config.gate_timeout,
            output_path=log_path,
            sandbox=Sandbox(self.policy, path),  # detached: the gate moves no ref
        )
        if result.timed_out:
            reason = f"gate timed out after {self.config.gate_timeout:g}s"
        elif result.returncode != 0:
            reason = f"gate failed (exit {result.returncode}): {self.config.gate_command}"
        else:
            return None
        return self._rejected(req, reason, tail=result.tail(TAIL_LINES))

    def _move(self, req: MergeRequest, new: str, old: str) -> bool:
        """Compare-and-swap the target from ``old`` to ``new``; False if it moved meanwhile."""
        message = f"pd: merge {req.task_id}"
        env = gitutil.identity_env()
        code, _out, err = gitutil.git_full(
            self.repo, "update-ref", "-m", message, self.ref, new, old, env=env
        )
        if code == 0:
            return True
        if self._head() != old:
            return False
        raise GitError(["git", "update-ref", self.ref, new, old], err, code)

    def _sync_checkout(self, old: str, new: str) -> None:
        """Bring the user's checkout of the target along (never one of pd's worktrees)."""
        if not self.config.sync_checkout:
            return
        branch, skip = self.config.target_branch, self.worktrees.list()
        if warning := sync_checkout(self.repo, branch, old, new, skip):
            self._log(warning)

    def _merged(self, req: MergeRequest, head: str, reason: str = "") -> MergeResult:
        self._log(f"{req.task_id}#{req.attempt}: merged, head {head[:12]} {reason}".rstrip())
        return MergeResult(req.task_id, req.attempt, merged=True, head=head, reason=reason)

    def _already(self, req: MergeRequest, head: str) -> MergeResult:
        """The target already holds the same tree: nothing of the branch lands."""
        self._log(f"{req.task_id}#{req.attempt}: already in {self.config.target_branch}")
        reason = f"{self.config.target_branch} already holds these changes"
        return MergeResult(
            req.task_id, req.attempt, merged=False, head=head, reason=reason, already_merged=True
        )

    def _rejected(
        self, req: MergeRequest, reason: str, conflicts: list[str] | None = None, tail: str = ""
    ) -> MergeResult:
        self._log(f"{req.task_id}#{req.attempt}: rejected: {reason}")
        self._keep(req)
        return MergeResult(
            req.task_id,
            req.attempt,
            merged=False,
            reason=reason,
            conflicts=conflicts or [],
            log_tail=tail,
        )

    def _keep(self, req: MergeRequest) -> None:
        """Nothing is lost: the next attempt resets the task branch, so the rejected
        commit stays reachable under ``refs/pd/rejected/<branch>/<attempt>``."""
        if req.commit and gitutil.rev_parse(self.repo, f"{req.commit}^{{commit}}"):
            ref = f"refs/pd/rejected/{req.branch}/{req.attempt}"
            gitutil.git_full(self.repo, "update-ref", ref, req.commit)

    def _log(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.log_dir / "merger.log", "a") as log:
            log.write(f"{stamp} {text}\n")


_deferred: list[int] = []  # a SIGTERM that arrived inside a critical section
_critical = False


@contextmanager
def _no_sigterm() -> Iterator[None]:
    """Hold a SIGTERM until the block ends: moving the target ref and syncing the
    user's checkout happen both or neither."""
    global _critical
    _critical = True
    try:
        yield
    finally:
        _critical = False
        if _deferred:
            _on_sigterm(_deferred[0], None)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Kill the running gate (its whole process group) before leaving."""
    if _critical:
        _deferred.append(signum)
        return
    kill_all_running()
    sys.exit(128 + signum)


def merger_main(conn: Any, config: dict[str, Any]) -> None:
    """Process entry point: answer MergeRequests on ``conn`` until Shutdown or EOF."""
    # The coordinator decides what Ctrl-C means; a terminal's SIGINT reaches the whole
    # process group, and a merger that died on it would abandon a half-run gate.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
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
    serve(conn, lambda m: merger.merge(m) if isinstance(m, MergeRequest) else None)
