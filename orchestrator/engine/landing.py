"""What must never land on the target branch, whatever the gate says.

A symlink committed by an agent reaches whoever checks out the target next: one that
points at ``/etc/passwd`` or ``~/.ssh`` turns a later read or write of a repository file
into one outside it. Git plumbing files change what git itself does on the user's
machine: ``.gitattributes`` picks filter, diff and merge drivers, ``.gitmodules`` makes
git fetch code, ``.githooks/`` is where teams point ``core.hooksPath``, ``.lfsconfig``
sets LFS endpoints. The merger checks the candidate against the target before the gate
runs; the mission can let symlinks inside the repository land (``sandbox.symlinks``) and
name the plumbing files a run may change (``sandbox.git_files``). ``.gitignore`` is not
plumbing: it runs nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.system import gitutil

PLUMBING = (".gitattributes", ".gitmodules", ".githooks", ".lfsconfig", ".gitconfig")
SYMLINK, GITLINK = "120000", "160000"


@dataclass(frozen=True)
class Change:
    """One path of ``git diff-tree -r``: its new mode and blob, and its status letter."""

    path: str
    mode: str
    blob: str
    status: str


def changes(repo: Path | str, old: str, new: str) -> list[Change]:
    """Every path that differs between the trees of ``old`` and ``new``."""
    out = gitutil.git(repo, "diff-tree", "-r", "-z", "--no-renames", old, new)
    fields = out.split("\0")
    found = []
    for header, path in zip(fields[::2], fields[1::2], strict=False):
        if not header.startswith(":"):
            continue
        _old_mode, mode, _old_blob, blob, status = header[1:].split(" ")
        found.append(Change(path, mode, blob, status[:1]))
    return found


def refusal(
    repo: Path | str,
    old: str,
    new: str,
    symlinks: str = "none",
    git_files: Iterable[str] = (),
) -> str | None:
    """Why ``new`` must not replace ``old`` on the target, or None when it may."""
    allowed = {f.strip("/") for f in git_files}
    for change in changes(repo, old, new):
        plumbing = _plumbing(change.path)
        if plumbing and plumbing not in allowed and change.path not in allowed:
            return (
                f"refused: the branch changes git plumbing {change.path!r}, which was not "
                f'asked for (a mission that means it lists it in "sandbox.git_files")'
            )
        if change.status == "D":
            continue
        if change.mode == GITLINK:
            return f"refused: the branch adds a submodule (gitlink) at {change.path!r}"
        if change.mode == SYMLINK:
            target = gitutil.git(repo, "cat-file", "blob", change.blob)
            problem = _symlink_problem(change.path, target, symlinks)
            if problem:
                return (
                    f"refused: the branch adds a symlink {change.path!r} -> {target!r}: {problem}"
                )
    return None


def _plumbing(path: str) -> str | None:
    """The plumbing name ``path`` is or lies under (nested .gitattributes count too)."""
    return next((part for part in path.split("/") if part in PLUMBING), None)


def _symlink_problem(path: str, target: str, symlinks: str) -> str | None:
    if posixpath.isabs(target) or target.startswith("~"):
        return "it points outside the repository"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    first = resolved.split("/")[0]
    if first == ".." or resolved == ".":
        return "it points outside the repository"
    if first == ".git":
        return "it points into the repository's .git"
    if symlinks != "inside":
        return 'symlinks may land only when the mission sets "sandbox.symlinks": "inside"'
    return None
