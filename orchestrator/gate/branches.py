"""Which branches a ``pd gate`` call means: names or globs, local or on a remote.

On a remote they are fetched first into its remote-tracking refs, so what is tested is
what the remote holds now. A name or glob that matches nothing is bad input: a gate that
silently tested nothing would report success.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.errors import BadInput, GitError
from orchestrator.gate.trees import Branch
from orchestrator.system import gitutil


def resolve(repo: Path, patterns: list[str], remote: str | None = None) -> list[Branch]:
    """Every branch the patterns name, once each, in the order given (a glob's matches
    in name order)."""
    found: dict[str, Branch] = {}
    for pattern in patterns:
        matches = _matches(repo, pattern, remote)
        if not matches:
            where = f"on remote {remote!r}" if remote else "in this repository"
            fix = "check the name (list them with `git branch -a`)"
            raise BadInput("pd gate", f"no branch {pattern!r} {where}", fix, "BRANCH")
        for branch in matches:
            found.setdefault(branch.name, branch)
    return list(found.values())


def _matches(repo: Path, pattern: str, remote: str | None) -> list[Branch]:
    pattern = pattern.removeprefix("refs/heads/")
    if remote is None:
        prefix = "refs/heads/"
    else:
        prefix = f"refs/remotes/{remote}/"
        spec = f"+refs/heads/{pattern}:{prefix}{pattern}"
        code, out, err = gitutil.git_full(repo, "fetch", "--quiet", remote, spec)
        if code != 0 and "couldn't find remote ref" not in (err + out):
            raise GitError(["git", "fetch", remote, spec], err or out, code)
    listing = gitutil.git(
        repo, "for-each-ref", "--format=%(refname) %(objectname)", f"{prefix}{pattern}"
    )
    glob = any(c in pattern for c in "*?[")
    branches = []
    for line in listing.splitlines():
        ref, commit = line.split()
        name = ref.removeprefix(prefix)
        if glob or name == pattern:  # (git also matches a plain name as a folder)
            branches.append(Branch(name, commit))
    return sorted(branches, key=lambda b: b.name)
