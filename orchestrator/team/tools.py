"""The core tools an agent uses, confined to its worktree.

Every file tool resolves the real path (following symlinks, in parent directories too)
and refuses anything outside the worktree or inside its ``.git``: a worker must never be
able to touch another worker's tree, the user's files or the repository's refs by name.
``run_command`` is a shell, so it is not confined by path: it runs in the worker's
sandbox (``sandbox.py``), in its own process group, and is killed as a group on timeout.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ToolError
from orchestrator.system.procs import ShellResult, kill_all_running, run_shell
from orchestrator.system.sandbox import Sandbox

_SECRET_MARKERS = ("API_KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")
_SECRET_PREFIXES = ("ANTHROPIC_", "OPENAI_")
MAX_LIST = 1000
MAX_MATCHES = 200
MAX_SEARCH_BYTES = 2_000_000


@dataclass
class ToolResult:
    """What goes back to the model; ``finished`` marks the tool that ends the attempt,
    whose input is ``final``."""

    content: str
    is_error: bool = False
    finished: bool = False
    summary: str = ""
    final: dict[str, Any] | None = None


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """Drop API keys and secrets, so an agent's shell can never print or send them."""
    return {
        k: v
        for k, v in env.items()
        if not any(m in k.upper() for m in _SECRET_MARKERS)
        and not k.upper().startswith(_SECRET_PREFIXES)
    }


def cap_text(text: str, cap: int) -> str:
    """Keep the head and tail of ``text`` (errors tend to sit at either end)."""
    if len(text) <= cap:
        return text
    half = cap // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut from the middle ...]\n{text[-half:]}"


# ---- the toolbox ---------------------------------------------------------------------


_STR, _INT, _NUM = {"type": "string"}, {"type": "integer"}, {"type": "number"}
_TOOLS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "read_file": (
        "Read a text file of the worktree: `limit` lines from line `offset` (1-based).",
        {"path": _STR, "offset": _INT, "limit": _INT},
        ["path"],
    ),
    "write_file": (
        "Create or overwrite a file (parent folders are created).",
        {"path": _STR, "content": _STR},
        ["path", "content"],
    ),
    "edit_file": (
        "Replace `old` by `new` in a file; `old` must match exactly once.",
        {"path": _STR, "old": _STR, "new": _STR},
        ["path", "old", "new"],
    ),
    "list_files": (
        "List files under a folder, recursively; `pattern` is a glob on the path or name.",
        {"path": _STR, "pattern": _STR},
        [],
    ),
    "search_files": (
        "Search text files for a regular expression; prints `file:line: text`.",
        {"pattern": _STR, "path": _STR, "glob": _STR},
        ["pattern"],
    ),
    "run_command": (
        "Run a bash command in the worktree root; prints the exit code and the output.",
        {"command": _STR, "timeout": _NUM},
        ["command"],
    ),
    "finish": (
        "Call when the task is done, with a short summary of what you changed. Finishing "
        "with no changed files is refused, unless the change is already in the target "
        "branch: then name the commit that holds it in already_in_target.",
        {"summary": _STR, "already_in_target": _STR},
        ["summary"],
    ),
}
_SPECS = [
    {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": False,
        },
    }
    for name, (description, props, required) in _TOOLS.items()
]
_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "array": (list,),
    "object": (dict,),
    "boolean": (bool,),
}
FINISH_SPEC = next(s for s in _SPECS if s["name"] == "finish")


@dataclass(frozen=True)
class Ending:
    """The tool that ends an attempt: ``finish`` for tasks; planning and review attempts
    end with their own (``submit_plan``, ``submit_review``), whose input is their result.
    ``check`` returns a problem, which goes back to the model while the attempt goes on,
    or None to accept."""

    spec: dict[str, Any]
    check: Callable[[dict[str, Any]], str | None] | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])


FINISH = Ending(FINISH_SPEC)


class Toolbox:
    """The tools of one agent, bound to one worktree ``root``.

    Its methods are the confined primitives (``resolve``, ``walk``, ``run``) and the core
    tools built on them; skills' handlers (``orchestrator.skills``) receive the toolbox
    and reuse both, so confinement, caps and process-group kills live in one place.
    """

    def __init__(
        self,
        root: Path,
        env: Mapping[str, str] | None = None,
        command_timeout: float = 300,
        output_cap: int = 20_000,
        ending: Ending = FINISH,
    ) -> None:
        self.root = Path(root).resolve()
        self.ending = ending
        self.env = scrub_env(os.environ if env is None else env)
        self.command_timeout = command_timeout
        self.output_cap = output_cap
        self.touched: set[str] = set()
        self.used: dict[str, int] = {}  # tool name -> calls, in order of first use
        self.sandbox: Sandbox | None = None  # set by the worker: where commands run
        self._aborted = False

    def specs(self) -> list[dict[str, Any]]:
        """The tool definitions offered to the model; the agent asks again every turn."""
        return [*(dict(s) for s in _SPECS if s is not FINISH_SPEC), dict(self.ending.spec)]

    def _lookup(self, name: str) -> tuple[dict[str, Any], Callable[..., ToolResult]] | None:
        if name == self.ending.name:
            return self.ending.spec, self.end
        spec = next((s for s in _SPECS if s["name"] == name and s is not FINISH_SPEC), None)
        return None if spec is None else (spec, getattr(self, name))

    def _check(self, spec: dict[str, Any], given: Any) -> None:
        _check_input(spec, given)

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a tool of this box; the agent loop refuses the others."""
        return self._lookup(name) is not None

    def call(self, name: str, input: dict[str, Any]) -> ToolResult:
        """Run one tool; bad input comes back as an error the model can act on."""
        found = self._lookup(name)
        if found is None:
            names = ", ".join(s["name"] for s in self.specs())
            return ToolResult(f"unknown tool {name!r}; available: {names}", is_error=True)
        spec, handler = found
        self.used[name] = self.used.get(name, 0) + 1
        if set(input) == {"_raw"}:  # the provider could not decode the model's arguments
            return ToolResult(
                f"your arguments for {name} were not valid JSON: {str(input['_raw'])[:200]}",
                is_error=True,
            )
        try:
            self._check(spec, input)
            return handler(**{k: v for k, v in input.items() if v is not None})
        except ToolError as exc:
            return ToolResult(str(exc), is_error=True)
        except (OSError, ValueError, RuntimeError) as exc:
            return ToolResult(f"{name} failed: {type(exc).__name__}: {exc}", is_error=True)

    def abort(self) -> None:
        """Kill a running command's process group (called from another thread)."""
        self._aborted = True
        kill_all_running()

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` inside root, or ToolError("refused: ...")."""
        if "\0" in path:
            raise ToolError("refused: path contains a NUL byte")
        if os.path.isabs(path) or path.startswith("~"):
            raise ToolError(f"refused: {path!r} is absolute; use a path relative to the worktree")
        try:
            real = (self.root / path).resolve()
        except RuntimeError as exc:  # symlink loop
            raise ToolError(f"refused: {path!r} cannot be resolved ({exc})") from exc
        if not real.is_relative_to(self.root):
            raise ToolError(f"refused: {path!r} leads outside the worktree")
        rel = real.relative_to(self.root)
        if any(p.lower() == ".git" for p in (*rel.parts, *Path(path).parts)):
            raise ToolError(f"refused: {path!r} is inside .git; use run_command with git instead")
        return real

    def rel(self, real: Path) -> str:
        return real.relative_to(self.root).as_posix() or "."

    def read_file(self, path: str, offset: int = 1, limit: int = 2000) -> ToolResult:
        real = self.resolve(path)
        if not real.is_file():
            raise ToolError(
                f"{path!r} is not a file" if real.exists() else f"{path!r} does not exist"
            )
        if offset < 1 or limit < 1:
            raise ToolError("offset and limit must be >= 1")
        chunk: list[str] = []
        size = total = 0
        full = False
        with real.open(errors="replace", newline="") as handle:  # streamed: files may be huge
            for total, line in enumerate(handle, 1):
                if total < offset or full:
                    continue
                full = len(chunk) >= limit or bool(chunk and size + len(line) > self.output_cap)
                if not full:
                    chunk.append(line[: self.output_cap])
                    size += len(line)
        if total == 0:
            return ToolResult(f"[{self.rel(real)}: empty file]")
        if offset > total:
            raise ToolError(f"offset {offset} is past the end ({path!r} has {total} lines)")
        end = offset + len(chunk) - 1
        more = f"; continue with offset={end + 1}" if end < total else ""
        header = f"[{self.rel(real)}: lines {offset}-{end} of {total}{more}]\n"
        return ToolResult(header + "".join(chunk))

    def write_file(self, path: str, content: str) -> ToolResult:
        real = self.resolve(path)
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text(content)
        self.touched.add(self.rel(real))
        return ToolResult(f"wrote {len(content)} characters to {self.rel(real)}")

    def edit_file(self, path: str, old: str, new: str) -> ToolResult:
        real = self.resolve(path)
        if not real.is_file():
            raise ToolError(f"{path!r} is not a file; use write_file to create it")
        if not old:
            raise ToolError("old must not be empty")
        text = real.read_text()
        count = text.count(old)
        if count != 1:
            hint = "copy the exact text from read_file" if count == 0 else "add surrounding lines"
            raise ToolError(f"old text matches {count} times in {path!r}, need exactly 1: {hint}")
        real.write_text(text.replace(old, new, 1))
        self.touched.add(self.rel(real))
        return ToolResult(f"edited {self.rel(real)}")

    def walk(self, path: str) -> Iterator[Path]:
        """Files under ``path`` in sorted order; never enters .git or symlinked folders."""
        real = self.resolve(path)
        if real.is_file():
            yield real
            return
        if not real.is_dir():
            raise ToolError(f"{path!r} does not exist")
        for dirpath, dirs, files in os.walk(real):
            dirs[:] = sorted(d for d in dirs if d.lower() != ".git")
            for name in sorted(files):
                if name.lower() != ".git":
                    yield Path(dirpath) / name

    def list_files(self, path: str = ".", pattern: str | None = None) -> ToolResult:
        found = []
        for file in self.walk(path):
            rel = file.relative_to(self.root).as_posix()
            if pattern is None or _glob(rel, pattern):
                found.append(rel)
                if len(found) > MAX_LIST:
                    break
        if len(found) > MAX_LIST:
            found[MAX_LIST:] = [f"[... more than {MAX_LIST} files; narrow path or pattern]"]
        return ToolResult("\n".join(found) or "(no files)")

    def search_files(self, pattern: str, path: str = ".", glob: str | None = None) -> ToolResult:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"bad regular expression {pattern!r}: {exc}") from exc
        hits: list[str] = []
        for file in self.walk(path):
            rel = file.relative_to(self.root).as_posix()
            if glob and not _glob(rel, glob):
                continue
            try:  # a symlinked file must not leak what it points to
                real = file.resolve()
            except RuntimeError:  # symlink loop
                continue
            if not real.is_relative_to(self.root) or not real.is_file():
                continue
            if real.stat().st_size > MAX_SEARCH_BYTES or b"\0" in real.read_bytes()[:8192]:
                continue
            for number, line in enumerate(real.read_text(errors="replace").splitlines(), 1):
                if regex.search(line):
                    hits.append(f"{rel}:{number}: {line[:300]}")
                    if len(hits) >= MAX_MATCHES:
                        hits.append(f"[... stopped at {MAX_MATCHES} matches; narrow the search]")
                        return ToolResult(cap_text("\n".join(hits), self.output_cap))
        return ToolResult(cap_text("\n".join(hits), self.output_cap) or "(no matches)")

    def run(self, command: str, timeout: float | None = None) -> ShellResult:
        """Run ``command`` in root: own process group, scrubbed env, output capped.

        Timeout and abort are ToolErrors carrying the output so far.
        """
        if timeout is not None and timeout <= 0:
            raise ToolError("timeout must be a positive number of seconds")
        limit = min(timeout or self.command_timeout, self.command_timeout)
        self._aborted = False
        res = run_shell(
            command, self.root, self.env, limit, output_cap=self.output_cap, sandbox=self.sandbox
        )
        if self._aborted:
            raise ToolError(f"aborted after {res.seconds:.1f}s\n{res.output}")
        if res.timed_out:
            note = f"timed out after {limit:g}s; the process group was killed"
            raise ToolError(f"{note}\n{res.output}")
        return res

    def run_command(self, command: str, timeout: float | None = None) -> ToolResult:
        res = self.run(command, timeout)  # output already within output_cap, head and tail
        return ToolResult(f"exit code: {res.returncode}\n{res.output}", is_error=not res.ok)

    def finish(self, summary: str, already_in_target: str | None = None) -> ToolResult:
        final = {"already_in_target": already_in_target} if already_in_target else None
        return ToolResult("finished", finished=True, summary=summary, final=final)

    def end(self, **given: Any) -> ToolResult:
        """The ending tool: accepted (the attempt is over) unless its check objects."""
        problem = self.ending.check(given) if self.ending.check is not None else None
        if problem:
            return ToolResult(problem, is_error=True)
        if self.ending is FINISH:
            return self.finish(**given)
        summary = str(given.get("summary", ""))
        return ToolResult("accepted", finished=True, summary=summary, final=given)


def _glob(rel: str, pattern: str) -> bool:
    """Match a glob against the relative path or just the file name ("*.py" works both ways)."""
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern)


def _check_input(spec: dict[str, Any], given: Any) -> None:
    """Check names and types against the spec, so the model gets a precise complaint."""
    schema = spec["input_schema"]
    if not isinstance(given, dict):
        raise ToolError(f"{spec['name']}: input must be an object")
    if missing := [k for k in schema["required"] if k not in given]:
        raise ToolError(f"{spec['name']}: missing argument(s) {', '.join(missing)}")
    for key, value in given.items():
        prop = schema["properties"].get(key)
        if prop is None:
            known = ", ".join(schema["properties"])
            raise ToolError(f"{spec['name']}: unknown argument {key!r}; known: {known}")
        if value is None and key not in schema["required"]:
            continue  # an explicit null means "use the default"
        kind = prop.get("type", "object")
        if isinstance(value, bool) != (kind == "boolean") or not isinstance(value, _TYPES[kind]):
            raise ToolError(f"{spec['name']}: {key} must be a {kind}")
