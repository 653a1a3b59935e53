"""Worker and integration worktrees: created once, reset cheaply, removed completely.

A worktree is reused from task to task (and by a worker respawned after a crash), because
``git worktree add`` plus the setup command (installing dependencies) is the slow part.
Reuse is a forced checkout plus ``git clean`` that keeps ignored files, so installed
dependencies survive. pd only ever touches worktrees under its own ``root``.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from orchestrator.errors import BadInput, GitError, PdError
from orchestrator.system import gitutil
from orchestrator.system.procs import run_shell
from orchestrator.system.sandbox import Policy, Sandbox

SETUP_MARKER = "pd-setup-done"
SETUP_FILES = "pd-setup-files"  # untracked, non-ignored paths the setup command created
# Per-worktree state a killed agent or git process can leave behind. The owner is dead
# (or is us, about to reset), so it is safe to drop before a forced checkout.
_STALE_STATE = ("index.lock", "HEAD.lock", "rebase-merge", "rebase-apply", "sequencer")


class SetupFailed(PdError):
    """The project's setup command failed in a fresh worktree."""

    def __init__(self, command: str, returncode: int, tail: str, timed_out: bool = False) -> None:
        self.command = command
        self.returncode = returncode
        self.tail = tail
        how = "timed out" if timed_out else f"exit {returncode}"
        super().__init__(f"setup command failed ({how}): {command}\n{tail}")


def task_branch(run_id: str, task_id: str) -> str:
    """The branch a task's attempts commit on. Its ref sits in a folder of its own
    (``refs/heads/pd/<run>/<task>/``): git moves a ref by writing a lock file beside it,
    so the sandbox can make that folder writable and every other ref read-only."""
    return f"pd/{run_id}/{task_id}/work"


def drop_spent_branches(repo: Path, run_id: str, head: str) -> None:
    """Delete a run's task branches whose commit is already in ``head`` (merged, or never
    got a commit); branches holding unmerged work stay."""
    prefix = f"refs/heads/pd/{run_id}/"
    listing = gitutil.git(
        repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False
    )
    for line in listing.splitlines():
        ref, commit = line.split()
        if gitutil.is_ancestor(repo, commit, head):
            gitutil.git(repo, "update-ref", "-d", ref, commit, check=False)


def _within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, comparing real paths (symlinked /tmp)."""
    return path.resolve().is_relative_to(root.resolve())


class WorktreeManager:
    """Creates, resets and removes the git worktrees under ``root`` for one repository.

    ``env`` is the complete environment for the setup command (None: inherit ours); the
    ``env`` given to ``prepare`` is laid over it. The setup command runs in the
    worktree's sandbox under ``policy``.
    """

    def __init__(
        self,
        repo: Path,
        root: Path,
        setup: str | None = None,
        env: Mapping[str, str] | None = None,
        setup_timeout: float = 600,
        policy: Policy | None = None,
    ) -> None:
        self.repo = Path(repo)
        self.root = Path(root)
        self.setup = setup
        self.env = None if env is None else dict(env)
        self.setup_timeout = setup_timeout
        self.policy = policy or Policy()

    def path_for(self, name: str) -> Path:
        """Where worktree ``name`` lives; refuses names that would escape ``root``."""
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise BadInput(
                "worktree name", f"{name!r} is not a plain folder name", "use [A-Za-z0-9._-]"
            )
        return self.root / name

    def prepare(
        self, name: str, base: str, branch: str | None, env: Mapping[str, str] | None = None
    ) -> Path:
        """Return worktree ``name`` clean at ``base``, on ``branch`` (or detached if None).

        Creates it (and runs setup) the first time; later calls only reset and clean it.
        """
        path = self.path_for(name)
        run_env = {**(os.environ if self.env is None else self.env), **(env or {})}
        # Git work under the repository's worktree lock; the setup command outside it.
        with gitutil.worktrees_locked(self.repo):
            fresh = not self._reset(path, base, branch)
            if fresh:
                self._add(path, base, branch)
        if self.setup and (fresh or not self._setup_done(path)):
            # a reused one: the first setup never finished
            self._run_setup(path, run_env, branch)
        return path

    def _reset(self, path: Path, base: str, branch: str | None) -> bool:
        """Reset an existing worktree to ``base``; False when there is none to reuse."""
        admin = linked_admin_dir(path)
        if admin is None or admin.parent.parent != self._common_dir:
            return False  # none there, or another repository's
        self._drop_stale_state(admin)
        self._checkout(path, base, branch)
        keep = [arg for p in self.setup_files(path, admin) for arg in ("-e", f"/{p}")]
        gitutil.git(path, "clean", "-ffdq", *keep)
        return True

    def _add(self, path: Path, base: str, branch: str | None) -> None:
        self._discard(path)
        self.root.mkdir(parents=True, exist_ok=True)
        exclude_from_status(self.repo, [self.root])
        # One step, one checkout: `add --detach` then `checkout -B` read all files twice
        # (the first index is racily clean), doubling the cost on big trees.
        # A branch another pd worktree still holds can't be moved by `add -B`: then the
        # slow path, detached add plus a checkout that takes the branch over.
        takeover = branch is not None and self._held_by_other(path, branch)
        on = ["--detach"] if branch is None or takeover else ["-B", branch]
        gitutil.git(
            self.repo, "worktree", "add", "-q", *on, str(path), base, env=gitutil.identity_env()
        )
        if takeover:
            self._checkout(path, base, branch)

    def remove(self, name: str) -> None:
        """Delete worktree ``name`` whatever its state (dirty, locked, half-created)."""
        with gitutil.worktrees_locked(self.repo):
            self._discard(self.path_for(name))

    def remove_all(self) -> None:
        """Delete every pd worktree under ``root``, then ``root`` itself if left empty."""
        with gitutil.worktrees_locked(self.repo):
            for path in self.list():
                self._discard(path)
            gitutil.git(self.repo, "worktree", "prune")
        if self.root.is_dir():
            for child in self.root.iterdir():
                # A leftover of ours has a .git *file* (a worktree link), never a .git dir.
                if (child / ".git").is_file():
                    shutil.rmtree(child, ignore_errors=True)
                elif child.is_dir() and not any(child.iterdir()):
                    child.rmdir()  # killed before git wrote anything into it
            if not any(self.root.iterdir()):
                self.root.rmdir()

    def list(self) -> list[Path]:
        """Worktrees registered with git whose path lies under ``root``."""
        return [p for p in self._registered()[1:] if _within(p, self.root)]

    # ---- internals ---------------------------------------------------------------

    def _registered(self) -> list[Path]:
        """Every worktree git knows of; the first is the main working tree."""
        return [Path(e["worktree"]) for e in gitutil.worktree_entries(self.repo)]

    def _is_registered(self, path: Path) -> bool:
        real = path.resolve()
        return any(p.resolve() == real for p in self._registered()[1:])

    def _discard(self, path: Path) -> None:
        """Unregister and delete ``path`` if it is a worktree or leftover folder."""
        registered = self._is_registered(path)
        if registered and path.exists():
            # Twice --force: also removes locked worktrees (a killed `worktree add` leaves
            # one locked with reason "initializing").
            args = ("worktree", "remove", "--force", "--force", str(path))
            gitutil.git(self.repo, *args, check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        if registered:
            # prune skips locked entries, and a locked missing worktree blocks a new add.
            gitutil.git(self.repo, "worktree", "unlock", str(path), check=False)
            gitutil.git(self.repo, "worktree", "prune")

    @functools.cached_property
    def _common_dir(self) -> Path:
        return gitutil.common_dir(self.repo).resolve()

    def _drop_stale_state(self, gitdir: Path) -> None:
        for name in _STALE_STATE:
            stale = gitdir / name
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)

    def _checkout(self, path: Path, base: str, branch: str | None) -> None:
        """Forced checkout of ``base``: drops staged and unstaged edits to tracked files."""
        env = gitutil.identity_env()  # reflog entries need an identity on bare machines
        if branch is None:
            gitutil.git(path, "checkout", "-q", "--force", "--detach", base, env=env)
            return
        takeover = ["--ignore-other-worktrees"] if self._held_by_other(path, branch) else []
        gitutil.git(path, "checkout", "-q", "--force", *takeover, "-B", branch, base, env=env)

    def _held_by_other(self, path: Path, branch: str) -> bool:
        """Whether another pd worktree still has ``branch`` checked out; the user's own
        worktree holding it is an error, never taken over."""
        holder = gitutil.checked_out_branches(self.repo).get(branch)
        if holder is None or holder.resolve() == path.resolve():
            return False
        if not _within(holder, self.root):
            raise GitError(
                ["checkout", branch], f"branch {branch} is checked out at {holder}, not ours", 1
            )
        # An earlier attempt of the same task left it checked out in another pd worktree;
        # that worker has moved on, so taking the branch over is safe.
        return True

    def setup_files(self, path: Path, admin: Path | None = None) -> list[str]:
        """Paths setup made that git would otherwise track (a copied ``.env`` not in
        .gitignore): kept through resets, never committed with an agent's work.
        ``admin``: the worktree's git dir, when the caller knows it."""
        try:
            listed = ((admin or gitutil.git_dir(path)) / SETUP_FILES).read_text()
        except FileNotFoundError:
            return []
        return [p.rstrip("/") for p in listed.split("\0") if p]

    def _setup_done(self, path: Path) -> bool:
        marker = gitutil.git_dir(path) / SETUP_MARKER
        return marker.is_file() and marker.read_text() == self.setup

    def _run_setup(self, path: Path, env: Mapping[str, str], branch: str | None) -> None:
        assert self.setup is not None
        box = Sandbox(self.policy, path, branch)
        result = run_shell(self.setup, path, env, self.setup_timeout, sandbox=box)
        if not result.ok:
            raise SetupFailed(self.setup, result.returncode, result.tail(), result.timed_out)
        made = gitutil.git(path, "ls-files", "-z", "--others", "--exclude-standard", "--directory")
        (gitutil.git_dir(path) / SETUP_FILES).write_text(made)
        (gitutil.git_dir(path) / SETUP_MARKER).write_text(self.setup)


def linked_admin_dir(path: Path) -> Path | None:
    """The git dir of the linked worktree at ``path`` if git has it registered, read
    from the two files that make the link (``path/.git`` names the dir, whose ``gitdir``
    names ``path/.git`` back); None otherwise. What ``git worktree list`` would tell, for
    the price of two small reads instead of a process on every reuse."""
    link = path / ".git"
    try:
        text = link.read_text().strip() if link.is_file() else ""
        if not text.startswith("gitdir:"):
            return None
        admin = (path / text.removeprefix("gitdir:").strip()).resolve()
        back = (admin / "gitdir").read_text().strip()
    except OSError:
        return None
    return admin if (admin / back).resolve() == link.resolve() else None


def exclude_from_status(repo: Path, paths: Iterable[Path]) -> None:
    """Add ``/<path>/`` to the repo's info/exclude for each path inside its working tree.

    Keeps pd's folders (worktrees, run store) out of the user's ``git status``. Paths
    outside the working tree or already ignored are skipped, so repeated runs add nothing.
    """
    top = gitutil.toplevel(repo).resolve()
    lines: list[str] = []
    for path in paths:
        real = Path(path).resolve()
        if real == top or not real.is_relative_to(top):
            continue
        relative = real.relative_to(top).as_posix()
        if gitutil.git_full(top, "check-ignore", "-q", f"{relative}/")[0] == 0:
            continue  # already ignored (.gitignore, or a parent folder excluded earlier)
        lines.append(f"/{relative}/")
    if not lines:
        return
    exclude = gitutil.common_dir(repo) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    present = set(text.splitlines())
    new = [line for line in dict.fromkeys(lines) if line not in present]
    if new:
        prefix = "" if not text or text.endswith("\n") else "\n"
        exclude.write_text(text + prefix + "\n".join(new) + "\n")
