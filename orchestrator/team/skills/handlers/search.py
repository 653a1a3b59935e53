"""Search skills: text search, outlines of a file, TODO markers, size of the codebase."""

from __future__ import annotations

import ast
import re
from collections import Counter

from orchestrator.errors import ToolError
from orchestrator.team.tools import MAX_SEARCH_BYTES, Toolbox, ToolResult

# One line per definition in the usual languages; Python gets a real parse instead.
_OUTLINE = re.compile(
    r"^\s*(?:export\s+)?(?:default\s+)?(?:pub(?:\([a-z]+\))?\s+)?(?:async\s+)?"
    r"(?:(?:abstract\s+)?class|interface|struct|enum|trait|impl|type|fn|func|function|def"
    r"|module|object|const\s+\w+\s*=\s*(?:async\s*)?\()\b.*"
)
_TODO = r"\b(TODO|FIXME|XXX|HACK|BUG)\b"


def search_code(
    box: Toolbox, pattern: str, path: str = ".", glob: str | None = None, ignore_case: bool = False
) -> ToolResult:
    return box.search_files(f"(?i){pattern}" if ignore_case else pattern, path, glob)


def _text(box: Toolbox, path: str) -> str:
    real = box.resolve(path)
    if not real.is_file():
        raise ToolError(f"{path!r} is not a file" if real.exists() else f"{path!r} does not exist")
    if real.stat().st_size > MAX_SEARCH_BYTES:
        raise ToolError(f"{path!r} is larger than {MAX_SEARCH_BYTES} bytes; use read_file")
    return real.read_text(errors="replace")


def file_outline(box: Toolbox, path: str) -> ToolResult:
    """Classes, functions and methods with their line numbers."""
    text = _text(box, path)
    lines = _python_outline(text) if path.endswith((".py", ".pyi")) else None
    if lines is None:
        lines = [
            f"{n}: {line.strip()[:160]}"
            for n, line in enumerate(text.splitlines(), 1)
            if _OUTLINE.match(line)
        ]
    return ToolResult("\n".join(lines) or f"(no definitions found in {path})")


def _python_outline(text: str) -> list[str] | None:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None  # half-written code: the regex outline still helps
    lines: list[str] = []

    def visit(nodes: list[ast.stmt], depth: int) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                lines.append(f"{node.lineno}: {'    ' * depth}class {node.name}")
                visit(node.body, depth + 1)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
                args = ", ".join(a.arg for a in node.args.args)
                lines.append(f"{node.lineno}: {'    ' * depth}{prefix} {node.name}({args})")

    visit(tree.body, 0)
    return lines


def todo_scan(box: Toolbox, path: str = ".") -> ToolResult:
    """TODO, FIXME, XXX, HACK and BUG markers, with a count per marker."""
    found = box.search_files(_TODO, path)
    if found.is_error or found.content == "(no matches)":
        return ToolResult("(no TODO/FIXME/XXX/HACK/BUG markers)") if not found.is_error else found
    counts = Counter(m for line in found.content.splitlines() for m in re.findall(_TODO, line))
    summary = ", ".join(f"{tag} {n}" for tag, n in counts.most_common())
    return ToolResult(f"{summary}\n{found.content}")


def code_stats(box: Toolbox, path: str = ".") -> ToolResult:
    """Files and lines per file type, biggest first, and the largest files."""
    files: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    sizes: list[tuple[int, str]] = []
    for file in box.walk(path):
        real = file.resolve()
        if not real.is_relative_to(box.root) or not real.is_file():
            continue  # a symlink out of the worktree is not ours to count
        data = real.read_bytes()[:MAX_SEARCH_BYTES]
        if b"\0" in data[:8192]:
            continue
        kind = file.suffix or file.name
        count = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        files[kind] += 1
        lines[kind] += count
        sizes.append((count, box.rel(file)))
    if not files:
        return ToolResult(f"(no text files under {path})")
    rows = [
        f"{kind:<12} {files[kind]:>6} files {lines[kind]:>9} lines"
        for kind, _ in lines.most_common(20)
    ]
    total = f"total: {sum(files.values())} text files, {sum(lines.values())} lines"
    largest = ", ".join(f"{rel} ({n})" for n, rel in sorted(sizes, reverse=True)[:5])
    return ToolResult("\n".join([total, *rows, f"largest: {largest}"]))
