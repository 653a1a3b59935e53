"""Shared fixtures: every test gets its own workspace and a real git repository."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

import psutil
import pytest


def _cache_bytecode() -> None:
    """Let the suite's Python processes share compiled bytecode, kept out of the tree.

    The suite starts thousands of Python processes (every ``pd`` command, coordinator,
    forkserver and helper script). Where ``PYTHONDONTWRITEBYTECODE`` is set (containers
    and CI images often set it), each of them compiles pd's modules from source again,
    and pytest rewrites every test module again in each of its processes: about a
    fifth of the suite's CPU. A pycache prefix outside the checkout keeps the tree as
    clean as the variable meant to, and the environment reaches every child (xdist's
    workers start after this conftest is imported)."""
    if not sys.dont_write_bytecode and "PYTHONDONTWRITEBYTECODE" not in os.environ:
        return
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or str(
        Path(tempfile.gettempdir()) / f"pd-test-pycache-{os.getuid()}"
    )
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode = False
    sys.pycache_prefix = prefix


_cache_bytecode()

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def run_git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` with a fixed identity (CI machines may have none)."""
    env = {**os.environ, **IDENTITY}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """Create a git repository at ``path`` with one commit holding ``files``.

    The first repository of each content is built with git; later ones are copies of it
    (the same commit), which spares each test three git processes. A folder that already
    holds files is built with git, since its files go into the commit."""
    files = files or {"README.md": "hello\n"}
    key = (branch, tuple(sorted(files.items())))
    template = _TEMPLATES.get(key)
    if template is None or (path.exists() and any(path.iterdir())):
        return _init_repo(path, files, branch)
    shutil.copytree(template, path, symlinks=True, dirs_exist_ok=True)
    return path


def _init_repo(path: Path, files: dict[str, str], branch: str) -> Path:
    fresh = not (path.exists() and any(path.iterdir()))
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", branch)
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "initial")
    if fresh:
        key = (branch, tuple(sorted(files.items())))
        template = Path(tempfile.mkdtemp(prefix="pd-test-repo-", dir=_template_root())) / "r"
        shutil.copytree(path, template, symlinks=True)
        _TEMPLATES[key] = template
    return path


_TEMPLATES: dict[tuple[str, tuple[tuple[str, str], ...]], Path] = {}


def _template_root() -> str:
    """One folder per test process for the template repositories, removed at its exit."""
    global _ROOT
    if _ROOT is None:
        _ROOT = tempfile.mkdtemp(prefix="pd-test-templates-")
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


_ROOT: str | None = None


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test(tmp_path: Path) -> Iterator[None]:
    """A test that fails while a ``pd`` it started waits (on a gate held on a file, say)
    would leave that process, and its workers, running for ever: kill what the test
    started and left. multiprocessing's own helpers (the forkserver) are kept: later
    tests in this process reuse them. Then ``sweep`` kills the orphans no parent links
    to us any more (a gate's ``sleep &`` reparented to init, a sandboxed command)."""
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    yield
    left = [p for p in me.children() if p.pid not in before and not _multiprocessing(p)]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
    psutil.wait_procs(left, timeout=10)
    sweep(tmp_path, keep={p.pid for p in me.children()})


def sweep(folder: Path, keep: Collection[int] = ()) -> list[int]:
    """Kill every process working in ``folder`` or naming it on its command line (a
    test's own tmp path: nothing there outlives the test), but ``keep``; their pids."""
    inside = f"{folder}/"
    killed: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if proc.pid in keep or proc.pid == os.getpid():
            continue
        paths = [f"{proc.info['cwd']}/", *(f"{arg}/" for arg in proc.info["cmdline"] or ())]
        if any(inside in path for path in paths):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(proc)
    psutil.wait_procs(killed, timeout=10)
    return [proc.pid for proc in killed]


def _multiprocessing(proc: psutil.Process) -> bool:
    try:
        return "multiprocessing" in " ".join(proc.cmdline())
    except psutil.Error:
        return True


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test's run store out of the real workspace (llm's autouse pattern)."""
    monkeypatch.setenv("PD_HOME", str(tmp_path / "pd-home"))


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh repository on branch ``main`` with one commit."""
    return make_repo(tmp_path / "repo")


# ---- end-to-end helpers --------------------------------------------------------------

import json  # noqa: E402
import subprocess as _sp  # noqa: E402

GATE = "bash check.sh"
CHECK_SH = (
    "#!/bin/bash\n# the project's tests: fail when any file says BROKEN\n"
    "! grep -rl --exclude=check.sh --exclude-dir=.git BROKEN .\n"
)


def finish_turn(summary: str = "done", delay: float = 0.0) -> dict:
    turn: dict = {"tool_calls": [{"name": "finish", "input": {"summary": summary}}]}
    if delay:
        turn["delay"] = delay
    return turn


def write_turn(path: str, content: str, delay: float = 0.0) -> dict:
    turn: dict = {
        "tool_calls": [{"name": "write_file", "input": {"path": path, "content": content}}]
    }
    if delay:
        turn["delay"] = delay
    return turn


def wait_file(release: Path | str) -> str:
    """A shell command that waits until ``release`` exists."""
    return f"while [ ! -e '{release}' ]; do sleep 0.02; done"


def shared_dir(tmp_path: Path) -> tuple[Path, dict]:
    """A folder the test and the run's sandboxed commands both see (release files, marks
    a gate leaves), and the mission field that lets commands write it."""
    shared = tmp_path / "shared"
    shared.mkdir(exist_ok=True)
    return shared, {"read_write": [str(shared)]}


def hold_turn(release: Path | str = "/nonexistent/pd-hold") -> dict:
    """A turn whose command waits until ``release`` exists (never, by default): holds an
    agent mid-task until the test lets go, kills it or aborts it. No timing window: the
    test decides when the attempt may go on."""
    return {"tool_calls": [{"name": "run_command", "input": {"command": wait_file(release)}}]}


def write_mission(folder: Path, tasks: list[dict], cassette: dict, **fields: object) -> Path:
    """A mission file and its cassette in ``folder``; ``fields`` override the defaults.
    One gate at a time unless ``gate`` says otherwise: the default follows the machine's
    cores, and a test must not."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cassette.json").write_text(json.dumps({"version": 1, "tasks": cassette}))
    gate = {"parallel": 1, **fields.pop("gate", {})}  # type: ignore[dict-item]
    mission = {
        "name": "test-mission",
        "test_command": GATE,
        "team": [{"role": "backend-dev", "count": 2}],
        "provider": {"name": "scripted", "cassette": "cassette.json"},
        "tasks": tasks,
        "gate": gate,
        **fields,
    }
    path = folder / "mission.json"
    path.write_text(json.dumps(mission, indent=1))
    return path


def pd(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 120, check: bool = False
) -> _sp.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, **IDENTITY, **(env or {})}
    result = _sp.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pd {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository whose test command (check.sh) fails when a file contains BROKEN."""
    return make_repo(tmp_path / "project", {"check.sh": CHECK_SH, "README.md": "project\n"})
