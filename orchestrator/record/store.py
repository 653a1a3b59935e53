"""The run store: everything about one run, in one folder, safe against crashes.

``events.jsonl`` is the source of truth: one JSON object per line, appended and fsync'd
by the single writer (the coordinator). The coordinator's store commits in groups
(``group_commit``): the events of a loop step share one fsync, made before anything
they cause happens (its pool calls ``commit`` before every send, spawn and kill). A
crash can leave at most a torn last line; readers skip it and the next writer cuts it
off before appending. ``state.json`` is a snapshot for fast reads, replaced atomically
(temp file + rename), so a reader sees the old snapshot or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.errors import RunNotFound
from orchestrator.record.eventbase import VERSION, E, Event, decode
from orchestrator.record.syncer import Syncer, not_durable
from orchestrator.wire.fastjson import dumps, loads


@contextmanager
def _disk() -> Iterator[None]:
    """A write or fsync of the event log that the disk refused (full, failing) is pd's
    ``InfraError``, saying what to do."""
    try:
        yield
    except OSError as error:
        raise not_durable(error) from error


def workspace() -> Path:
    """The folder pd works in: ``PD_HOME`` if set, else the current directory."""
    return Path(os.environ.get("PD_HOME") or Path.cwd()).resolve()


def runs_dir(home: Path | None = None) -> Path:
    return (home or workspace()) / ".pd" / "runs"


def new_run_id(now: float | None = None) -> str:
    """``YYYYMMDD-HHMMSS-xxxx`` in UTC, so ids sort by start time across DST changes."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now or time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` so that no reader ever sees a partial file.

    ``durable=False`` skips the fsyncs: still atomic for readers, but after a power cut
    the old version may be back. Right for snapshots rebuilt from the event log.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        if durable:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _parsed(line: bytes) -> dict[str, Any] | None:
    """The event on one line of the log; None for a torn line or garbage."""
    if not line.endswith(b"\n"):
        return None
    try:
        event = loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _created_ns(run_dir: Path) -> int:
    try:
        return int((run_dir / "created").read_text())
    except (OSError, ValueError):
        return 0


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _now() -> float:
    """The wall clock to a tenth of a millisecond, as events carry it: the nearest float
    to a whole number of ticks prints as that number (``round`` cost three times as much)."""
    return int(time.time() * 10_000 + 0.5) / 10_000


class RunStore:
    """One run's folder. Only the coordinator appends events and writes state."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.run_id = run_dir.name
        self._events_handle: Any = None
        self._seq = 0
        self._synced = 0  # the last seq known to be on disk
        self._must = 0  # the last seq appended with sync=True: due before the next effect
        self._group = False
        self._syncer: Syncer | None = None  # group commit: the thread that fsyncs
        self._caller = threading.local()  # per thread: the last sync=True seq it appended
        self.fsyncs = 0
        # Appends may come from two threads of the coordinator (the permit thread records
        # usage); the lock covers the write only, never an fsync.
        self._lock = threading.Lock()

    # ---- finding runs ------------------------------------------------------------

    @classmethod
    def create(cls, home: Path | None = None, run_id: str | None = None) -> RunStore:
        run_dir = runs_dir(home) / (run_id or new_run_id())
        for sub in ("logs", "transcripts", "control"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        created = run_dir / "created"
        if not created.exists():
            created.write_text(str(time.time_ns()))
        return cls(run_dir)

    @classmethod
    def open(cls, run_id: str | None = None, home: Path | None = None) -> RunStore:
        """An existing run by id (or unique prefix); the newest run when ``run_id`` is None."""
        base = runs_dir(home)
        ids = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if not ids:
            raise RunNotFound(
                str(base),
                "no runs here",
                "start one with `pd run MISSION`, "
                "or run this command in the folder you ran pd in (or set PD_HOME)",
            )
        if run_id is None:  # the newest: by the id's second, then by creation within it
            return cls(base / max(ids, key=lambda i: (i[:15], _created_ns(base / i))))
        matches = [i for i in ids if i == run_id] or [i for i in ids if i.startswith(run_id)]
        if len(matches) != 1:
            problem = "no such run" if not matches else "ambiguous run id"
            raise RunNotFound(
                str(base), f"{problem} '{run_id}'", f"use one of: {', '.join(ids[-5:])}"
            )
        return cls(base / matches[0])

    # ---- events ------------------------------------------------------------------

    @property
    def events_path(self) -> Path:
        return self.dir / "events.jsonl"

    def append_event(self, kind: str, sync: bool = True, **data: Any) -> dict[str, Any]:
        """Append one event given by its kind and fields (``append`` takes a typed one);
        returns it with its ``seq`` and wall-clock ``at``.

        Durable at once by default; ``sync=False`` leaves the fsync to the next ``sync()``
        (the coordinator calls it once per loop turn), for events that come by the hundred.
        Safe to call from several threads.
        """
        with self._lock:
            seq = self._next_seq(sync)
            event = {"kind": kind, "v": VERSION, "seq": seq, "at": _now(), **data}
            self._write(dumps(event) + b"\n")
        if sync and not self._group:
            self._fsync(seq)
        return event

    def append(self, event: E, sync: bool = True) -> E:
        """Append a typed event (see ``append_event``); returns it stamped with its
        ``seq`` and ``at``."""
        with self._lock:
            seq = self._next_seq(sync)
            stamped = event.stamped(seq, _now())
            self._write(stamped.line())
        if sync and not self._group:
            self._fsync(seq)
        return stamped

    def _next_seq(self, sync: bool) -> int:
        """The next event's ``seq`` (under the lock), noting a ``sync=True`` one as due."""
        if self._events_handle is None:
            self._open_for_append()
        self._seq += 1
        if sync:
            self._must = self._seq
            self._caller.last = self._seq
        return self._seq

    def _write(self, line: bytes) -> None:
        with _disk():
            self._events_handle.write(line)
            if not self._group:  # in group commit the next commit or sync writes it out
                self._events_handle.flush()

    def group_commit(self) -> RunStore:
        """From now on a ``sync=True`` event is made durable by the next ``commit()`` (or
        ``sync()``), together with every other event before it: one fsync per loop turn
        instead of one per event. Whoever acts on events must wait for that first; the
        coordinator's pool holds every effect until ``synced()`` covers its causes. The
        fsync runs on a thread (``record.syncer``): ``commit_soon`` and ``sync_soon``
        start one and return. Returns the store."""
        self._group = True
        if self._syncer is None:
            self._syncer = Syncer(self._fsync_now)
        return self

    def commit(self) -> None:
        """Make every ``sync=True`` event durable, with one fsync; none when none is due
        (``sync=False`` events alone wait for ``sync()``)."""
        self._commit(every=False, wait=True)

    def commit_soon(self) -> None:
        """``commit`` without waiting for the disk (in group commit; else ``commit``)."""
        self._commit(every=False, wait=False)

    def sync(self) -> None:
        """Make every event durable, ``sync=False`` ones too."""
        self._commit(every=True, wait=True)

    def sync_soon(self) -> None:
        """``sync`` without waiting for the disk (in group commit; else ``sync``)."""
        self._commit(every=True, wait=False)

    def durable(self) -> bool:
        """Whether every ``sync=True`` event the calling thread appended is on disk: what
        must hold before the thread acts on them."""
        return self.due() <= self._synced

    def due(self) -> int:
        """The seq the calling thread's next effect waits for: its last ``sync=True``."""
        return getattr(self._caller, "last", 0)

    def synced(self) -> int:
        """Every event up to this seq is on disk."""
        return self._synced

    @property
    def wakeup_fd(self) -> int | None:
        """Readable when a background fsync has finished (group commit only): wait on it
        beside the workers' pipes, then call ``take_wakeups``."""
        return self._syncer.wakeup_fd if self._syncer is not None else None

    def take_wakeups(self) -> None:
        if self._syncer is not None:
            self._syncer.take_wakeups()

    def _commit(self, every: bool, wait: bool) -> None:
        """Write out the buffered lines, then fsync them if an event is due: any
        (``every``) or a ``sync=True`` one."""
        with self._lock:  # a seq counts as written only once its line is
            self._write_out()
            seq, last = self._seq, self._seq if every else self._must
        if last > self._synced:
            self._fsync(seq, wait)

    def write_out(self) -> None:
        """Let other processes read every event appended so far (not yet durable): what
        the coordinator does before it shows anything outside, like state.json."""
        with self._lock:
            self._write_out()

    def _write_out(self) -> None:
        """Hand the buffered lines to the OS (under the lock): readers in other processes
        see them from now on. In group commit appends leave this to the commit, so a
        turn of the loop writes its events in one system call, not one per event."""
        if self._events_handle is not None:
            with _disk():
                self._events_handle.flush()

    def _fsync(self, seq: int, wait: bool = True) -> None:
        if seq <= self._synced:
            return
        if self._syncer is None:
            self._fsync_now(seq)
        elif wait:
            self._syncer.wait(seq)
        else:
            self._syncer.ask(seq)

    def _fsync_now(self, seq: int) -> None:
        """One fsync (on the syncer's thread in group commit): every line written out
        before the call is on disk after it, up to ``seq`` at least."""
        handle = self._events_handle
        if handle is None or seq <= self._synced:
            return
        if self._syncer is not None:
            os.fsync(handle.fileno())  # a failure is the syncer's to keep and raise
        else:
            with _disk():
                os.fsync(handle.fileno())
        self.fsyncs += 1
        self._synced = max(self._synced, seq)

    def _open_for_append(self) -> None:
        """Cut whatever a crash left after the last good event (a torn line, or a line
        of garbage), so new events follow the ones readers can see."""
        path = self.events_path
        if path.exists():
            data = path.read_bytes()
            keep, count = 0, 0
            for line in data.splitlines(keepends=True):
                if _parsed(line) is None:
                    break
                keep, count = keep + len(line), count + 1
            if keep != len(data):
                with open(path, "r+b") as handle:
                    handle.truncate(keep)
                    os.fsync(handle.fileno())
            self._seq = self._synced = count
        # A buffer big enough for a turn's events: they reach the file as whole lines.
        self._events_handle = open(path, "ab", buffering=1 << 20)  # noqa: SIM115 - held for the run's life

    def events(self) -> Iterator[Event]:
        """Every complete event in order, typed (``record.events``); a kind this version
        does not know comes as ``Unknown``. A torn or corrupt line ends the stream there."""
        return map(decode, self.raw_events())

    def events_after(self, offset: int) -> tuple[list[Event], int]:
        """The complete events from byte ``offset`` of the log on (a reader that follows
        a live run), and the offset after the last of them."""
        try:
            with open(self.events_path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return [], offset
        events = []
        for line in data.splitlines(keepends=True):
            raw = _parsed(line)
            if raw is None:
                break
            events.append(decode(raw))
            offset += len(line)
        return events, offset

    def raw_events(self) -> Iterator[dict[str, Any]]:
        """Every complete event in order, as the JSON objects on disk."""
        self.write_out()  # this process's own events, buffered or not
        try:
            handle = open(self.events_path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with handle:
            for line in handle:
                event = _parsed(line)
                if event is None:
                    return
                yield event

    def close(self) -> None:
        """Make every event durable, then close the log. A failed disk is raised, after the
        fsync thread and the file are let go all the same (a second close does nothing)."""
        try:
            self.sync()
        finally:
            if self._syncer is not None:
                self._syncer.stop()
                self._syncer = None
                self._group = False
            with self._lock:
                handle, self._events_handle = self._events_handle, None
                if handle is not None:
                    with _disk():  # the file is closed even when its last write fails
                        handle.close()

    # ---- snapshot and files ------------------------------------------------------

    def write_state(self, state: dict[str, Any]) -> None:
        """The snapshot is not fsync'd: ``events.jsonl`` is the durable record, and an fsync
        here stalled the coordinator's loop (and every permit waiting on it) for ~60 ms."""
        self.write_state_text(json.dumps(state, indent=1, default=str))

    def write_state_text(self, text: str) -> None:
        """``write_state`` for a snapshot already in JSON (the coordinator's, built from
        cached pieces)."""
        write_atomic(self.dir / "state.json", text, durable=False)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except FileNotFoundError:
            return None

    def write_json(self, name: str, data: Any) -> None:
        write_atomic(self.dir / name, json.dumps(data, indent=2, default=str))

    def read_json(self, name: str) -> Any:
        return json.loads((self.dir / name).read_text())

    def log_path(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def transcript_path(self, task_id: str, attempt: int | str) -> Path:
        folder = self.dir / "transcripts" / task_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{attempt}.jsonl"

    @property
    def session_log_path(self) -> Path:
        """One line per merged task, in order: what later tasks learn the team did."""
        return self.dir / "session.log"

    def handoff_path(self, task_id: str, attempt: int) -> Path:
        """The running handoff note of an attempt, kept current by its worker, so a
        crash or a kill still leaves the next attempt a note."""
        folder = self.dir / "handoffs" / task_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{attempt}.md"

    @property
    def lock_path(self) -> Path:
        return self.dir / "coordinator.lock"

    @property
    def control_dir(self) -> Path:
        return self.dir / "control"
