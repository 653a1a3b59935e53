"""Requests from other ``pd`` processes to a live coordinator, and liveness checks.

A request is a small JSON file dropped into the run's ``control/`` folder (written
atomically). The coordinator picks requests up within one loop tick; no socket to leak,
and a request made while the coordinator restarts is still there when it comes back.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from orchestrator.record.store import RunStore, write_atomic

if TYPE_CHECKING:
    import psutil


@dataclass
class ControlRequest:
    """``abort`` the whole run, or only ``task`` or ``worker`` when one is named."""

    action: str
    task: str | None = None
    worker: str | None = None


def send_request(store: RunStore, request: ControlRequest) -> Path:
    path = store.control_dir / f"{time.time():.6f}-{secrets.token_hex(3)}.json"
    store.control_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(asdict(request)))
    return path


def take_requests(store: RunStore) -> list[ControlRequest]:
    """Requests waiting for the coordinator, oldest first; each is taken only once."""
    out = []
    for path in sorted(store.control_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            out.append(ControlRequest(**data))
        except (OSError, ValueError, TypeError):
            pass  # a malformed request is dropped, not fatal to the run
        path.unlink(missing_ok=True)
    return out


def coordinator_alive(store: RunStore) -> bool:
    """True while some process holds the run's coordinator lock."""
    if not store.lock_path.exists():
        return False
    lock = FileLock(store.lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The process, only if it is still the one recorded (a reused PID is not it).
    Without a recorded start time there is no telling, so the answer is no."""
    if not pid or create_time is None:
        return None
    import psutil  # here: most commands that read a run never look at its processes

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 0.01:
            return None
        return proc
    except psutil.Error:
        return None


def kill_recorded(state: dict) -> list[int]:
    """Kill every process the snapshot recorded that is still the same process."""
    import psutil

    recorded = [state.get("coordinator", {}), state.get("merger", {}), *state.get("workers", [])]
    procs = [same_process(r.get("pid"), r.get("create_time")) for r in recorded if r]
    alive = [p for p in procs if p is not None]
    for proc in alive:
        try:
            for child in proc.children(recursive=True):
                child.kill()
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=3)
    return [p.pid for p in alive]
