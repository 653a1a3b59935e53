"""Git skills: the ``git`` binary in the worktree, through ``Toolbox.run``.

Not ``gitutil.git``: that lays its environment over pd's own, API keys included, and a
repository's hooks or aliases would see them. ``box.run`` has the scrubbed environment,
the output cap and the process-group kill of every other agent command.
"""

from __future__ import annotations

import shlex

from orchestrator.errors import ToolError
from orchestrator.system.gitutil import identity_env
from orchestrator.team.tools import Toolbox, ToolResult


def _git(box: Toolbox, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in {"LC_ALL": "C", **(env or {})}.items())
    res = box.run(f"{prefix} {shlex.join(['git', *args])}")
    return res.returncode, res.output


def _ok(box: Toolbox, *args: str, env: dict[str, str] | None = None) -> str:
    code, out = _git(box, *args, env=env)
    if code != 0:
        raise ToolError(f"git {args[0]} failed (exit {code}): {out.strip()}")
    return out


def _paths(box: Toolbox, path: str | None) -> list[str]:
    """``-- path`` for a confined path (git gets the relative form)."""
    return ["--", box.rel(box.resolve(path))] if path else []


def _rev(rev: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise ToolError(f"{rev!r} is not a revision (a branch, tag or commit id)")
    return rev


def git_status(box: Toolbox) -> ToolResult:
    out = _ok(box, "status", "--short", "--branch", "--untracked-files=all")
    lines = out.rstrip("\n").splitlines()
    return ToolResult(out if len(lines) > 1 else f"{out.rstrip()}\n(nothing changed)")


def git_diff(
    box: Toolbox, path: str | None = None, staged: bool = False, base: str | None = None
) -> ToolResult:
    args = ["diff", "--no-color", "--no-ext-diff"]
    if staged:
        args.append("--cached")
    if base:
        args.append(_rev(base))
    out = _ok(box, *args, *_paths(box, path))
    return ToolResult(out or "(no differences)")


def git_log(box: Toolbox, limit: int = 10, path: str | None = None) -> ToolResult:
    if limit < 1:
        raise ToolError("limit must be >= 1")
    fmt = "--format=%h %ad %an: %s"
    out = _ok(box, "log", f"-n{min(limit, 200)}", "--date=short", fmt, *_paths(box, path))
    return ToolResult(out or "(no commits)")


def git_blame(box: Toolbox, path: str, start: int = 1, end: int | None = None) -> ToolResult:
    if start < 1 or (end is not None and end < start):
        raise ToolError("start must be >= 1 and end >= start")
    span = f"{start},{end}" if end else f"{start},+200"
    return ToolResult(_ok(box, "blame", "--date=short", "-L", span, *_paths(box, path)))


def git_commit(box: Toolbox, message: str, paths: list[str] | None = None) -> ToolResult:
    """Commit on the checked-out task branch: ``paths``, else what the tools touched plus
    changes to tracked files."""
    if not message.strip():
        raise ToolError("message must not be empty")
    code, branch = _git(box, "symbolic-ref", "-q", "--short", "HEAD")
    if code != 0:
        raise ToolError("HEAD is detached: commits belong on the task branch")
    if paths:
        chosen = [box.rel(box.resolve(p)) for p in paths]
    else:  # a file written and deleted again is no pathspec; `add -u` covers removals
        chosen = [p for p in sorted(box.touched) if (box.root / p).exists()]
    if chosen:
        _ok(box, "add", "-A", "--", *chosen)
    if not paths:
        _ok(box, "add", "-u")
    staged = _ok(box, "diff", "--cached", "--name-only")
    if not staged.strip():
        return ToolResult("nothing to commit (no staged changes)", is_error=True)
    env = identity_env()
    _ok(box, "-c", "commit.gpgsign=false", "commit", "-q", "--no-verify", "-m", message, env=env)
    head = _ok(box, "rev-parse", "--short", "HEAD").strip()
    files = ", ".join(staged.split())
    return ToolResult(f"committed {head} on {branch.strip()}: {files}")
