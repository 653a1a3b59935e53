"""What both benchmarks share: output, percentiles, plain git, a bare Pipe echo."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def say(text: str = "") -> None:
    """Progress goes out at once, so a slow step shows where the time goes."""
    print(text, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; enough for tens of samples and needs no numpy."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def run_git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    """Plain git, outside pd's helpers, so baselines carry none of pd's overhead."""
    proc = subprocess.run(
        ["git", "-C", str(cwd), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode().strip()


def echo(conn: Connection) -> None:
    """The far end of a bare Pipe: send every message straight back."""
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        if not data:
            return
        conn.send_bytes(data)


def new_repo(path: Path, name: str = "README.md") -> Path:
    """A repository at ``path`` on ``main`` with one commit of one file."""
    path.mkdir(parents=True)
    run_git(path, "init", "-q", "-b", "main")
    (path / name).write_text(f"{name}\n")
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "initial")
    return path


def alive(entry: dict) -> bool:
    """Whether the process a run's state.json recorded (pid and start time) still runs."""
    import psutil

    try:
        proc = psutil.Process(entry["pid"])
        same = abs(proc.create_time() - entry["create_time"]) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, KeyError, TypeError):
        return False
