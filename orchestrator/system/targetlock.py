"""One live run per target branch: a second ``pd run`` (or ``pd resume``) on a branch a
live run is working on is refused up front, naming that run, instead of both doing the
same work twice.

The lock is ``flock`` on a small file in the repository's shared git dir
(``.git/pd/live/<branch>.lock``), held by the coordinator for the whole run: the kernel
drops it when the coordinator dies, so a crashed run never blocks the next. The file
says who holds it (run id, pid, workspace), for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from urllib.parse import quote

from orchestrator.errors import BadInput
from orchestrator.system import gitutil


def _path(repo: Path, branch: str) -> Path:
    return gitutil.common_dir(repo) / "pd" / "live" / f"{quote(branch, safe='')}.lock"


def live_run(repo: Path, branch: str) -> dict[str, object] | None:
    """Who holds ``branch`` of ``repo`` now (run, pid, workspace), or None."""
    path = _path(repo, branch)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return dict(json.loads(path.read_text() or "{}"))
            except (OSError, ValueError):
                return {}
        return None
    finally:
        os.close(fd)


def refuse_if_live(repo: Path, branch: str, where: str) -> None:
    """Exit 2 with the live run's name when another run works on ``branch``."""
    holder = live_run(repo, branch)
    if holder is None:
        return
    run = holder.get("run", "another run")
    place = f" in {holder['workspace']}" if holder.get("workspace") else ""
    raise BadInput(
        where,
        f"run {run} (pid {holder.get('pid', '?')}) is working on branch '{branch}' of {repo}",
        f"follow it with `pd status`{place}, stop it with `pd abort`, or wait for it to end",
        "target_branch",
    )


class TargetLock:
    """Held by a live coordinator for its whole run."""

    def __init__(self, repo: Path, branch: str) -> None:
        self.repo, self.branch = repo, branch
        self.path = _path(repo, branch)
        self._fd: int | None = None

    def acquire(self, run_id: str, workspace: Path) -> None:
        """Take the branch for ``run_id``; BadInput naming the holder if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            refuse_if_live(self.repo, self.branch, str(workspace))
            raise BadInput(  # it ended meanwhile: the next start will get it
                str(workspace), f"branch '{self.branch}' was busy", "try again", "target_branch"
            ) from None
        info = {"run": run_id, "pid": os.getpid(), "workspace": str(workspace)}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock; the file stays for the next run
            self._fd = None
