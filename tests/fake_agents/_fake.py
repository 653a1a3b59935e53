"""What every fake agent CLI shares: the behaviour a test asks for through FAKE_MODE.

Modes: ok (edit done.txt, print the tool's success output), error (the tool's own error
format, non-zero exit), garbage (unreadable output, exit 0), crash (one line, stderr,
exit 7), hang (start a grandchild, write both pids to FAKE_PIDS, sleep), stream (print
one progress line, wait for the file FAKE_GO before going on), env (write the
environment to env.json, then as ok).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def mode() -> str:
    return os.environ.get("FAKE_MODE", "ok")


def emit(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def event(data: dict) -> None:
    emit(json.dumps(data))


def edit(prompt: str) -> None:
    """What the real tool would do to the worktree: write the prompt's first line."""
    Path("done.txt").write_text(prompt.splitlines()[0] + "\n")
    Path("argv.json").write_text(json.dumps(sys.argv[1:]))
    if mode() == "env":
        Path("env.json").write_text(json.dumps(dict(os.environ)))


def hang() -> None:
    """Sleep with a grandchild in our process group, as a tool running a test suite would."""
    if os.environ.get("FAKE_IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the grandchild inherits this
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    target = Path(os.environ["FAKE_PIDS"])
    temp = target.with_suffix(".tmp")
    temp.write_text(json.dumps({"agent": os.getpid(), "grandchild": child.pid}))
    temp.rename(target)  # atomic: the test never reads half a file
    time.sleep(60)
    child.wait()
    sys.exit(0)


def wait_for_go() -> None:
    """Block until the test's on_line callback creates FAKE_GO: proof that lines stream."""
    go = Path(os.environ["FAKE_GO"])
    deadline = time.monotonic() + 10
    while not go.exists():
        if time.monotonic() > deadline:
            print("fake: never saw the go file", file=sys.stderr, flush=True)
            sys.exit(3)
        time.sleep(0.02)


def garbage() -> None:
    emit("<<garbage>> this is not what the real tool prints", '{"broken": json', "")
    sys.exit(0)


def crash() -> None:
    emit("starting up")
    print("boom: the fake crashed", file=sys.stderr, flush=True)
    sys.exit(7)


def common_modes(progress_line: str) -> None:
    """Handle the modes that look the same for every tool; return for ok/env/stream/error."""
    current = mode()
    if current == "garbage":
        garbage()
    if current == "crash":
        crash()
    if current == "hang":
        emit(progress_line)
        hang()
    if current == "stream":
        emit(progress_line)
        wait_for_go()
