"""A gate run's tree: a base with branches merged in, as one commit, built without a
checkout.

The candidate's first parent is the base and its other parents are the branches, so a
batch that passes lands as ONE commit: the target's first-parent history then holds only
trees that passed the gate, never an untested step in between. A branch that conflicts
(with the base or with a branch merged before it) leaves the candidate with its paths;
one whose change the base already holds is reported as such, and never merged twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import GitError
from orchestrator.system import gitutil


@dataclass(frozen=True)
class Branch:
    name: str  # what the user or the run calls it (a branch name, a task id)
    commit: str


@dataclass
class Candidate:
    """What ``build`` made of a base and branches."""

    commit: str | None  # the tree to test; None: no branch adds anything
    merged: list[str] = field(default_factory=list)  # names whose change it holds
    already: list[str] = field(default_factory=list)  # names the base already holds
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # name -> paths


def build(repo: Path, base: str, branches: list[Branch], message: str) -> Candidate:
    """Merge ``branches`` in order onto ``base``; the result is one commit with parents
    [base, *merged branches] and the tree of the merges done one by one. A single branch
    that is one commit on ``base`` is its own candidate: its first parent is the base."""
    if len(branches) == 1 and (fast := _fast_forward(repo, base, branches[0])) is not None:
        return fast
    result = Candidate(commit=None)
    # ``tip`` is the last merge made into a commit; ``tree`` holds every merge so far, and
    # ``pending`` the branch merged into it but not yet into ``tip`` (made into a commit
    # only when another branch has to merge on top of it).
    tip, tree, parents = base, tree_of(repo, base), []
    pending: Branch | None = None
    for branch in branches:
        if gitutil.is_ancestor(repo, branch.commit, base):
            result.already.append(branch.name)
            continue
        if pending is not None:
            tip = commit_tree(repo, tree, [tip, pending.commit], f"pd gate: {pending.name}")
            pending = None
        merged, conflicts = merged_tree(repo, tip, branch.commit)
        if merged is None:
            result.conflicts[branch.name] = conflicts
            continue
        if merged == tree and tip == base:
            result.already.append(branch.name)  # the same change, made some other way
            continue
        if merged != tree:  # (the same tree: a branch ahead of it made the same change)
            tree, pending = merged, branch
        result.merged.append(branch.name)
        parents.append(branch.commit)
    if parents:
        result.commit = commit_tree(repo, tree, [base, *parents], message)
    return result


def _fast_forward(repo: Path, base: str, only: Branch) -> Candidate | None:
    """A branch that is one commit on ``base`` is its own candidate (a fast-forward), or
    is already there when its tree is the base's; None when it is anything else."""
    parent, tree, base_tree = gitutil.resolve(
        repo, f"{only.commit}^1", f"{only.commit}^{{tree}}", f"{base}^{{tree}}"
    )
    if parent != base:
        return None
    if tree == base_tree:
        return Candidate(commit=None, already=[only.name])
    return Candidate(commit=only.commit, merged=[only.name])


def merged_tree(repo: Path, ours: str, theirs: str) -> tuple[str | None, list[str]]:
    """The tree of merging ``theirs`` into ``ours``, or (None, conflicting paths). Git's
    text merge only: a repository's merge drivers (``merge=union``) never hide a
    conflict here."""
    code, out, err = gitutil.merge_tree(repo, ours, theirs)
    if code not in (0, 1):
        raise GitError(["git", "merge-tree", "--write-tree", ours, theirs], err, code)
    tree, *paths = out.split("\0")
    if code == 1:
        return None, list(dict.fromkeys(p for p in paths if p))
    return tree, []


def tree_of(repo: Path, commit: str) -> str:
    return gitutil.git(repo, "rev-parse", f"{commit}^{{tree}}")


def commit_tree(repo: Path, tree: str, parents: list[str], message: str) -> str:
    args = [arg for parent in parents for arg in ("-p", parent)]
    env = gitutil.identity_env()
    return gitutil.git(repo, "commit-tree", tree, *args, "-m", message, env=env)
