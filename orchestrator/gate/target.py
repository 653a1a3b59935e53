"""The branch a gate lands on: moved by compare-and-swap, never forced.

Locally the ref moves with ``git update-ref NEW OLD``, which fails if anyone moved it
meanwhile; a checkout of the branch is brought along. On a remote it moves by a plain
push, which the server refuses unless it is a fast-forward: a candidate's first parent
is the head it was tested on, so a refusal means the remote moved, and the work is
tested again on the new head. Either way a moved target is never overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from orchestrator.errors import BadInput, GitError
from orchestrator.system import gitutil


class Target(Protocol):
    name: str

    def head(self) -> str:
        """The target's commit now (a remote's is fetched first)."""
        ...

    def advance(self, old: str, new: str) -> bool:
        """Move from ``old`` to ``new``; False when it is no longer at ``old``."""
        ...


class LocalTarget:
    def __init__(self, repo: Path, branch: str, message: str = "pd gate") -> None:
        self.repo, self.name, self.message = repo, branch, message
        self.ref = f"refs/heads/{branch}"
        self.warnings: list[str] = []  # checkouts that could not follow a move
        if gitutil.rev_parse(repo, self.ref) is None:
            raise BadInput(str(repo), f"no branch {branch!r}", "name an existing branch", "--into")

    def head(self) -> str:
        head = gitutil.rev_parse(self.repo, self.ref)
        if head is None:
            raise GitError(["rev-parse", self.ref], "the target branch disappeared")
        return head

    def advance(self, old: str, new: str) -> bool:
        env = gitutil.identity_env()
        code, _out, err = gitutil.git_full(
            self.repo, "update-ref", "-m", self.message, self.ref, new, old, env=env
        )
        if code == 0:
            if warning := sync_checkout(self.repo, self.name, old, new):
                self.warnings.append(warning)
            return True
        if self.head() != old:
            return False
        raise GitError(["git", "update-ref", self.ref, new, old], err, code)


class RemoteTarget:
    def __init__(self, repo: Path, remote: str, branch: str) -> None:
        self.repo, self.remote, self.name = repo, remote, branch
        self.tracking = f"refs/remotes/{remote}/{branch}"
        if not gitutil.git(repo, "remote").split().count(remote):
            raise BadInput(
                str(repo), f"no remote {remote!r}", "name a configured remote", "--remote"
            )

    def head(self) -> str:
        spec = f"+refs/heads/{self.name}:{self.tracking}"
        code, out, err = gitutil.git_full(self.repo, "fetch", "--quiet", self.remote, spec)
        if code != 0:
            raise GitError(["git", "fetch", self.remote, spec], err or out, code)
        head = gitutil.rev_parse(self.repo, self.tracking)
        if head is None:
            raise GitError(["rev-parse", self.tracking], "the remote has no such branch")
        return head

    def advance(self, old: str, new: str) -> bool:
        """A plain push: the server takes it only as a fast-forward of what it holds."""
        dest = f"{new}:refs/heads/{self.name}"
        code, out, err = gitutil.git_full(self.repo, "push", "--porcelain", self.remote, dest)
        if code == 0:
            gitutil.git(self.repo, "update-ref", self.tracking, new)
            return True
        if any(line.startswith("!") for line in out.splitlines()):
            return False  # rejected: the remote moved (fetch first / non-fast-forward)
        raise GitError(["git", "push", self.remote, dest], err or out, code)


def sync_checkout(
    repo: Path, branch: str, old: str, new: str, skip_under: Path | None = None
) -> str | None:
    """Bring a checkout of ``branch`` along after its ref moved, keeping the user's
    unrelated edits; returns a warning when it could not.

    ``read-tree -m -u old new`` is the two-tree merge ``git checkout`` itself uses; it
    refuses (and changes nothing) when a local edit touches a file the merge changed.
    A refusal does not undo the move: the ref already moved.
    """
    holder = gitutil.checked_out_branches(repo).get(branch)
    if holder is None or (skip_under and holder.resolve().is_relative_to(skip_under.resolve())):
        return None  # not checked out, or in one of pd's own worktrees
    gitutil.git_full(holder, "update-index", "-q", "--refresh")
    code, out, err = gitutil.git_full(holder, "read-tree", "-m", "-u", old, new)
    if code == 0:
        return None
    return (
        f"warning: {branch} moved to {new[:12]} but the checkout at {holder} was not "
        f"updated (git read-tree exit {code}): {(err or out).strip()}"
    )
