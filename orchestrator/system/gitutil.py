"""Thin helpers over the git binary, so every git call in pd fails the same way (GitError).

Commands run the ``git`` binary through ``subprocess`` (LC_ALL=C output, stdin closed),
as GitPython's ``Git.execute`` used to run them: importing GitPython cost every pd process
a tenth of a second and a ``git version`` subprocess, for this one call. Every call also
passes ``-C <cwd>``: a missing ``cwd`` falls back to the process's own working directory,
and running a destructive command in the wrong repository is the one mistake pd must
never make.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import GitError

PD_NAME = "pd"
PD_EMAIL = "pd@localhost"
# Config that would make git run a program of the repository's choosing, turned off.
SAFE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
)
_DIFFING = ("diff", "log", "show")  # may call diff.external or a textconv driver


def command_line(cwd: Path | str, args: tuple[str, ...] | list[str]) -> list[str]:
    """``git`` with pd's safe config, ``-C cwd`` and ``args``; diffs without external
    drivers."""
    args = list(args)
    at = 0
    while at < len(args) and args[at] == "-c":  # the caller's own -c options come first
        at += 2
    if at < len(args) and args[at] in _DIFFING:
        args[at + 1 : at + 1] = ["--no-ext-diff", "--no-textconv"]
    return ["git", *SAFE_CONFIG, "-C", str(cwd), *args]


def git(
    cwd: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> str:
    """Run ``git -C cwd args...``; return stdout without its trailing newline.

    ``env`` is laid over the current environment. Raises GitError when ``check`` and git
    exits non-zero.
    """
    code, out, err = git_full(cwd, *args, env=env, input=input, timeout=timeout)
    if check and code != 0:
        raise GitError(["git", "-C", str(cwd), *args], err or out, code)
    return out


def git_full(
    cwd: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
) -> tuple[int, str, str]:
    """Like ``git`` but never raises on a non-zero exit: (returncode, stdout, stderr).

    For commands whose exit code is an answer (merge-tree, merge-base --is-ancestor).
    """
    command = command_line(cwd, args)
    full_env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "C", **(env or {})}
    if input is None:
        # Output as bytes, decoded without failing on a file name that is not UTF-8.
        try:
            ran = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=str(cwd) if os.access(str(cwd), os.X_OK) else None,
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise GitError(command, f"timed out after {timeout}s", -1) from exc
        out = ran.stdout.removesuffix(b"\n").decode(errors="surrogateescape")
        return ran.returncode, out, ran.stderr.removesuffix(b"\n").decode(errors="surrogateescape")
    try:
        proc = subprocess.run(
            command, input=input, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise GitError(command, f"timed out after {timeout}s", -1) from exc
    return proc.returncode, proc.stdout.removesuffix("\n"), proc.stderr


def identity_env(name: str = PD_NAME, email: str = PD_EMAIL) -> dict[str, str]:
    """Author and committer identity for commands that write commits or reflogs.

    Machines (CI, containers) often have no global identity; without this git refuses to
    commit.
    """
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def rev_parse(repo: Path | str, rev: str) -> str | None:
    """The object id ``rev`` names, or None when it names nothing."""
    out = git(repo, "rev-parse", "-q", "--verify", rev, check=False)
    return out or None


def resolve(repo: Path | str, *revs: str) -> list[str | None]:
    """The object id each of ``revs`` names (``abc^1``, ``main^{tree}``), or None for
    one that names nothing: one ``git cat-file`` for them all, not a process each."""
    if not revs:
        return []
    if any("\n" in rev for rev in revs):  # one per line: a newline would shift the answers
        raise GitError(
            ["git", "cat-file", "--batch-check"], f"a revision holds a newline: {revs!r}"
        )
    out = git(
        repo, "cat-file", "--batch-check=%(objectname)", input="".join(f"{r}\n" for r in revs)
    )
    lines = out.split("\n")
    return [
        None if line.endswith(" missing") or line.endswith(" ambiguous") else line for line in lines
    ]


def is_ancestor(repo: Path | str, a: str, b: str) -> bool:
    """Whether commit ``a`` is contained in ``b`` (a commit is its own ancestor)."""
    code, _out, err = git_full(repo, "merge-base", "--is-ancestor", a, b)
    if code in (0, 1):
        return code == 0
    raise GitError(["git", "merge-base", "--is-ancestor", a, b], err, code)


def is_git_repo(path: Path | str) -> bool:
    """Whether ``path`` is inside a git working tree or git dir."""
    if not Path(path).is_dir():
        return False
    return bool(git(path, "rev-parse", "--git-dir", check=False))


def current_branch(repo: Path | str) -> str | None:
    """The short name of the checked-out branch, or None when HEAD is detached."""
    return git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False) or None


_held = threading.local()


@contextmanager
def worktrees_locked(repo: Path | str) -> Iterator[None]:
    """Hold the repository's worktree list still: one adder, remover or reader at a time.

    git fails now and then ("failed to read .git/worktrees/…/commondir") when it lists
    worktrees while another process is adding one, and every checkout, add and list does
    that. The lock is ``flock`` on the shared git dir itself, across pd's processes, so
    nothing is left in the user's repository; it is re-entrant within a thread.
    """
    key = _lock_key(repo)
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        depth[key] = 1
        try:
            yield
        finally:
            depth[key] = 0
    finally:
        os.close(fd)  # closing releases the lock


_lock_keys: dict[str, str] = {}


def _lock_key(repo: Path | str) -> str:
    """The shared git dir of ``repo``, asked of git once per path."""
    key = _lock_keys.get(str(repo))
    if key is None:
        key = _lock_keys[str(repo)] = str(common_dir(repo))
    return key


def worktree_entries(repo: Path | str) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as dicts (keys: worktree, HEAD, branch, ...).

    The first entry is always the main working tree.
    """
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    with worktrees_locked(repo):
        listing = git(repo, "worktree", "list", "--porcelain")
    for line in [*listing.splitlines(), ""]:
        if not line:
            if current:
                entries.append(current)
            current = {}
            continue
        key, _, value = line.partition(" ")
        current[key] = value
    return entries


def checked_out_branches(repo: Path | str) -> dict[str, Path]:
    """Branch short name -> path of the worktree that has it checked out."""
    result: dict[str, Path] = {}
    for entry in worktree_entries(repo):
        ref = entry.get("branch", "")
        if ref.startswith("refs/heads/"):
            result[ref.removeprefix("refs/heads/")] = Path(entry["worktree"])
    return result


def is_dirty(path: Path | str) -> bool:
    """Tracked changes (staged or not) or untracked files that are not ignored."""
    return bool(git(path, "status", "--porcelain", "--untracked-files=normal"))


def common_dir(repo: Path | str) -> Path:
    """The git dir shared by all worktrees (where ``info/exclude`` lives)."""
    return Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir"))


def git_dir(path: Path | str) -> Path:
    """This worktree's own git dir (holds its index, HEAD and index.lock)."""
    return Path(git(path, "rev-parse", "--absolute-git-dir"))


def toplevel(path: Path | str) -> Path:
    """Root of the working tree containing ``path``."""
    return Path(git(path, "rev-parse", "--show-toplevel"))


_neutral_dirs: dict[str, Path] = {}


def neutral_env(repo: Path | str) -> dict[str, str]:
    """An environment in which git sees only ``repo``'s objects: no config, attributes,
    hooks or merge drivers of the repository, the user or the system.

    For plumbing on object ids (``merge-tree``): git's own text merge decides, so a
    ``merge=union`` attribute cannot hide a conflict and no configured driver command
    runs. The git dir is an empty one of pd's own; objects are read and written in the
    repository's object store.
    """
    objects = str(Path(_lock_key(repo)) / "objects")  # the shared git dir, asked once
    empty = _neutral_dirs.get(objects)
    if empty is None:
        empty = Path(tempfile.mkdtemp(prefix="pd-neutral-git-"))
        (empty / "refs").mkdir()
        (empty / "HEAD").write_text("ref: refs/heads/main\n")
        # Bare: no working tree, so no .gitattributes of a checkout is read either.
        (empty / "config").write_text("[core]\n\tbare = true\n")
        _neutral_dirs[objects] = empty
        atexit.register(shutil.rmtree, empty, True)
    return {
        "GIT_DIR": str(empty),
        "GIT_OBJECT_DIRECTORY": objects,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
    }


def merge_tree(repo: Path | str, ours: str, theirs: str) -> tuple[int, str, str]:
    """``git merge-tree --write-tree`` of two commits with git's text merge only:
    (exit code, NUL-separated tree and conflicting paths, stderr)."""
    args = ("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs)
    env = neutral_env(repo)
    # Run from the empty git dir: from inside a checkout, git reads that checkout's
    # .gitattributes even for a bare GIT_DIR.
    return git_full(env["GIT_DIR"], *args, env=env)
