"""File skills: the core tools of ``Toolbox`` plus patch, delete and move."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import tempfile

from orchestrator.errors import ToolError
from orchestrator.team.tools import Toolbox, ToolResult


def read_file(box: Toolbox, path: str, offset: int = 1, limit: int = 2000) -> ToolResult:
    return box.read_file(path, offset, limit)


def write_file(box: Toolbox, path: str, content: str) -> ToolResult:
    return box.write_file(path, content)


def edit_file(box: Toolbox, path: str, old: str, new: str) -> ToolResult:
    return box.edit_file(path, old, new)


def list_files(box: Toolbox, path: str = ".", pattern: str | None = None) -> ToolResult:
    return box.list_files(path, pattern)


def find_files(box: Toolbox, name: str, path: str = ".") -> ToolResult:
    """Files and folders whose name contains ``name`` or matches it as a glob."""
    glob = any(c in name for c in "*?[")
    needle = name.lower()
    found: set[str] = set()
    for file in box.walk(path):
        rel = box.rel(file)
        parts = rel.split("/")
        if glob and fnmatch.fnmatch(rel.lower(), needle):
            found.add(rel)
        for depth, part in enumerate(parts, 1):
            hit = fnmatch.fnmatch(part.lower(), needle) if glob else needle in part.lower()
            if hit:
                found.add("/".join(parts[:depth]) + ("/" if depth < len(parts) else ""))
    shown = sorted(found)
    if len(shown) > 200:
        shown = [*shown[:200], f"[... {len(shown) - 200} more; narrow the name or path]"]
    return ToolResult("\n".join(shown) or f"(nothing named like {name!r})")


_PATCH_PATH = re.compile(r"^(?:---|\+\+\+) (?:[ab]/)?(\S+)", re.MULTILINE)


def apply_patch(box: Toolbox, patch: str) -> ToolResult:
    """Apply a unified diff with ``git apply`` (all hunks or none)."""
    paths = sorted({p for p in _PATCH_PATH.findall(patch) if p != "/dev/null"})
    if not paths:
        raise ToolError("no file names found: the patch needs '--- a/path' and '+++ b/path' lines")
    for path in paths:
        box.resolve(path)  # refuse outside paths and .git before git sees them
    if not patch.endswith("\n"):
        patch += "\n"
    # Inside the worktree: a sandboxed command sees no other folder of ours.
    with tempfile.NamedTemporaryFile(
        "w", prefix=".pd-patch-", suffix=".patch", dir=box.root, delete=False
    ) as handle:
        handle.write(patch)
    try:
        res = box.run(f"git apply --verbose --whitespace=nowarn {shlex.quote(handle.name)}")
    finally:
        os.unlink(handle.name)
    if not res.ok:
        return ToolResult(f"patch not applied (nothing changed):\n{res.output}", is_error=True)
    box.touched.update(paths)
    return ToolResult(f"applied to {', '.join(paths)}\n{res.output}")


def delete_file(box: Toolbox, path: str) -> ToolResult:
    real = box.resolve(path)
    link = box.resolve(os.path.dirname(path) or ".") / os.path.basename(path)
    if link.is_symlink():
        real = link  # delete the link, not what it points to
    elif not real.is_file():
        raise ToolError(f"{path!r} is not a file" if real.exists() else f"{path!r} does not exist")
    real.unlink()
    box.touched.add(box.rel(link))
    return ToolResult(f"deleted {box.rel(link)}")


def move_file(box: Toolbox, source: str, destination: str, overwrite: bool = False) -> ToolResult:
    box.resolve(source)  # what it is (or points to) must be inside the worktree
    src = box.resolve(os.path.dirname(source) or ".") / os.path.basename(source)
    if not (src.is_file() or src.is_symlink()):
        raise ToolError(
            f"{source!r} is not a file" if src.exists() else f"{source!r} does not exist"
        )
    dst = box.resolve(destination)
    if dst.is_dir():
        dst = box.resolve(os.path.join(destination, src.name))
    if dst.exists() and not overwrite:
        raise ToolError(f"{box.rel(dst)} exists; pass overwrite: true to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    box.touched.update({box.rel(src), box.rel(dst)})
    return ToolResult(f"moved {box.rel(src)} to {box.rel(dst)}")
