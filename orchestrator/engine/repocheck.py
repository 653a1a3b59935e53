"""The repository side of preflight: the repository, its target branch, the checkout
holding that branch, the context files and the gate command.

These are the checks that ask git and the disk, apart from the team's (``teamcheck``),
which read only the mission and the roles; each raises a one-line ``BadInput``.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from orchestrator.errors import BadInput
from orchestrator.spec.mission import Mission
from orchestrator.spec.testcommand import Detected, detect_test_command
from orchestrator.system.gitutil import (
    checked_out_branches,
    current_branch,
    git,
    git_full,
    is_git_repo,
    rev_parse,
)
from orchestrator.tasks.scheduling import overlap

# The gate runs under bash: its builtins and keywords are not programs to look up, and a
# command that starts with a keyword (if, for, a subshell …) can't be checked by one word.
SHELL_WORDS = {
    "true",
    "false",
    "exit",
    "test",
    "[",
    "[[",
    "cd",
    ":",
    "echo",
    "set",
    "export",
    "source",
    ".",
    "eval",
    "exec",
    "if",
    "for",
    "while",
    "until",
    "case",
    "time",
    "!",
    "{",
    "(",
}


def check_repo(mission: Mission, mission_path: Path, workspace: Path, repo_arg: str | None) -> Path:
    if repo_arg:
        repo, where, field = Path(repo_arg).expanduser().resolve(), "--repo", None
    elif mission.repo:
        repo = (mission_path.parent / Path(mission.repo).expanduser()).resolve()
        where, field = str(mission_path), "repo"
    else:
        repo, where, field = workspace, str(workspace), None
    if not repo.is_dir():
        raise BadInput(
            where, f"repository {repo} does not exist", "point --repo at a git repository", field
        )
    if not is_git_repo(repo):
        raise BadInput(
            where,
            f"{repo} is not a git repository",
            "run `git init` there or point --repo at a repository",
            field,
        )
    top = Path(git(repo, "rev-parse", "--show-toplevel"))
    return top.resolve()


def check_branch(mission: Mission, repo: Path, where: str) -> tuple[str, str]:
    branch = mission.target_branch or current_branch(repo)
    if not branch:
        raise BadInput(
            where,
            f"{repo} has no branch checked out (detached HEAD)",
            "set target_branch in the mission",
            "target_branch",
        )
    head = rev_parse(repo, f"refs/heads/{branch}")
    if head is None:
        names = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()
        fix = f"use one of: {', '.join(names[:10])}" if names else "make a first commit"
        raise BadInput(where, f"branch '{branch}' not found in {repo}", fix, "target_branch")
    holder = checked_out_branches(repo).get(branch)
    if holder is not None:
        _check_checkout(mission, branch, Path(holder), where)
    return branch, head


def _check_checkout(mission: Mission, branch: str, path: Path, where: str) -> None:
    """The checkout holding the target is moved along with every merge. Tracked edits
    there would be mixed with merged work, and an untracked file where a task says it
    writes would be in a merge's way; other untracked files (a new mission) are fine."""
    tracked, untracked = _status(path)
    if tracked:
        raise BadInput(
            where,
            f"branch '{branch}' is checked out in {path} with uncommitted changes: "
            + _names(tracked),
            "commit or stash them first, or choose another target_branch",
            "target_branch",
        )
    in_the_way = [
        (name, i)
        for i, task in enumerate(mission.tasks)
        for name in untracked
        if overlap([name], task.files)
    ]
    if in_the_way:
        names = _names([name for name, _ in in_the_way])
        raise BadInput(
            where,
            f"branch '{branch}' is checked out in {path} with untracked files where a merge "
            f"would write: {names} (tasks[{in_the_way[0][1]}].files)",
            "commit, move or ignore them first, or choose another target_branch",
            "target_branch",
        )


def _status(path: Path) -> tuple[list[str], list[str]]:
    """(changed tracked paths, untracked paths) of a checkout; ignored files are neither."""
    entries = git(path, "status", "--porcelain=v1", "-z", "--untracked-files=all").split("\0")
    tracked, untracked, skip = [], [], False
    for entry in entries:
        if skip or not entry:
            skip = False
            continue
        code, name = entry[:2], entry[3:]
        (untracked if code == "??" else tracked).append(name)
        skip = code[0] in "RC"  # a rename's or copy's source path follows
    return tracked, untracked


def _names(paths: list[str], most: int = 5) -> str:
    unique = list(dict.fromkeys(paths))
    more = f" and {len(unique) - most} more" if len(unique) > most else ""
    return ", ".join(unique[:most]) + more


def check_gate(
    mission: Mission, repo: Path, head: str, where: str, recorded: str | None = None
) -> Detected:
    """The gate's command: ``recorded`` (what a resumed run started with), else the
    mission's, else the one its repository's tree at ``head`` shows (pytest, npm test …;
    the reason says why), checked to be runnable."""
    command = recorded or mission.gate_command
    field = "gate.command" if mission.gate.command else "test_command"
    found = Detected(command, "") if command and command.strip() else None
    found = found or detect_test_command(repo, head)
    if found is None:
        raise BadInput(
            where,
            "no test command: the merge ratchet needs one, and the repository shows none "
            "(no pytest suite, npm test script, Cargo.toml, go.mod or Makefile test target)",
            'set test_command, e.g. "python -m pytest -q"',
            "test_command",
        )
    try:
        words = shlex.split(found.command)
    except ValueError as exc:
        raise BadInput(
            where, f"cannot parse the command ({exc})", "fix its quoting", field
        ) from None
    program = next((w for w in words if "=" not in w.split("/")[0]), "")
    if not program or program in SHELL_WORDS or not (program[0].isalnum() or program[0] in "./_"):
        return found
    present = (repo / program).exists() if "/" in program else shutil.which(program)
    if not present:
        detected = f" (detected `{found.command}`: {found.reason})" if found.reason else ""
        fix = "install it or correct the command (it runs in a checkout of the repository)"
        if found.reason:
            fix = "install it, or set test_command"
        raise BadInput(where, f"command '{program}' not found{detected}", fix, field)
    return found


def check_context_files(mission: Mission, repo: Path, branch: str, head: str, where: str) -> None:
    """Every agent reads these from its worktree: they must be in the target branch."""
    for i, name in enumerate(mission.context_files):
        path = Path(name)
        inside = not path.is_absolute() and ".." not in path.parts
        if not inside or git_full(repo, "cat-file", "-e", f"{head}:{path.as_posix()}")[0]:
            raise BadInput(
                where,
                f"context file '{name}' is not in {branch} of {repo}",
                "commit it first, or give its path relative to the repository root",
                f"context_files[{i}]",
            )
