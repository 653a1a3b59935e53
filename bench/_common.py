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
