"""Requests from other ``pd`` processes to a live coordinator, and liveness checks.

A request is a small JSON file dropped into the run's ``control/`` folder (written
atomically). The coordinator picks requests up within one loop tick; no socket to leak,
and a request made while the coordinator restarts is still there when it comes back.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

from orchestrator.record.store import RunStore, write_atomic

if TYPE_CHECKING:
    import psutil

ACTIONS = ("abort", "handoff")


@dataclass
class ControlRequest:
    """``abort`` the whole run, or only ``task`` or ``worker`` when one is named;
    ``handoff`` a ``worker``. ``name`` is the request's file stem, its answer's key."""

    action: str
    task: str | None = None
    worker: str | None = None
    name: str = field(default="", compare=False)

    def problem(self) -> str | None:
        """Why the coordinator cannot act on this request, or None."""
        if self.action not in ACTIONS:
            return f"unknown action {self.action!r} (known: {', '.join(ACTIONS)})"
        for name in ("task", "worker"):
            if not isinstance(getattr(self, name), str | None):
                return f"{name} must be a string"
        if self.task and self.worker:
            return "name a task or a worker, not both"
        if self.action == "handoff" and not self.worker:
            return "a handoff names its worker"
        return None


def send_request(store: RunStore, request: ControlRequest) -> Path:
    path = store.control_dir / f"{time.time():.6f}-{secrets.token_hex(3)}.json"
    store.control_dir.mkdir(parents=True, exist_ok=True)
    body = {"action": request.action, "task": request.task, "worker": request.worker}
    write_atomic(path, json.dumps(body))
    return path


def take_requests(store: RunStore) -> list[ControlRequest]:
    """Requests waiting for the coordinator, oldest first; each is taken only once. A file
    that is not a request comes back as one with an empty action, so it is answered with
    an error (``ControlRequest.problem``) rather than silently dropped."""
    out = []
    try:  # every turn of the loop: one listing, where a glob cost ten times as much
        with os.scandir(store.control_dir) as found:
            names = sorted(e.name for e in found if e.name.endswith(".json") and e.is_file())
    except FileNotFoundError:
        return []
    for path in (store.control_dir / name for name in names):
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError
            request = ControlRequest(**{**data, "name": path.stem})
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError):
            request = ControlRequest(action="", name=path.stem)
        out.append(request)
        path.unlink(missing_ok=True)
    return out


def _answer_path(store: RunStore, name: str) -> Path:
    return store.control_dir / "answers" / f"{name}.json"


def answer(store: RunStore, request: ControlRequest, error: str | None = None) -> None:
    """The coordinator's answer to a request: done, or why not (the sender prints it)."""
    path = _answer_path(store, request.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"ok": error is None, "error": error or ""}), durable=False)


def await_answer(store: RunStore, sent: Path) -> str | None:
    """Wait for the live coordinator's answer to the request at ``sent``: None when it was
    done (or the coordinator ended meanwhile), else the reason it was refused."""
    path = _answer_path(store, sent.stem)
    while not path.exists():
        if not coordinator_alive(store):
            return None
        time.sleep(0.01)
    data = json.loads(path.read_text())
    path.unlink(missing_ok=True)
    return None if data.get("ok") else str(data.get("error") or "refused")


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
