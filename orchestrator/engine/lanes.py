"""The merger with parallel gates (``gate.parallel`` W > 1): up to W gate runs at once,
each in its own integration worktree, and a target that moves only when the merge queue
says ``Land``.

One merger process with W gate threads ("lanes"), not W merger processes, because what
the merger does besides running gates is small and must happen in order: a stacked
batch is built on the tree of the run below it (built just before it), a batch on the
target head is built on the head the last ``LandRun`` left, and target moves happen one
at a time. So the main thread reads the coordinator's messages in order and does all
the git work (build a tree, compare-and-swap, sync the checkout, answer), and each lane
only waits on one gate process at a time, the slow part, which runs outside Python. The
coordinator keeps one merger pipe and one crash story (the merger dies: what it had goes
back to the queue, and what had landed is found in the target), and SIGTERM keeps its
meaning: the gates are killed, a ref move in progress finishes first (it runs in the
main thread, where the handler runs), and a killed gate's "failure" is never sent.

The merger never decides to land here: a passing gate is reported with its ``tree``,
and the coordinator's merge queue answers ``LandRun`` (its ``Land``) or ``CancelRun``
(its ``Cancel``: a run below failed or left, and this gate is killed). With W = 1 the
merger lands on a pass by itself (``Merger.merge_batch``): with one gate the queue's
answer to a passing run is always ``Land``, so asking would only add a round trip.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from orchestrator.engine.child import creator_alive, serve
from orchestrator.engine.merger import Merger
from orchestrator.engine.sigterm import held, leaving
from orchestrator.errors import GitError
from orchestrator.wire.messages import (
    BatchResult,
    CancelRun,
    LandRun,
    MergeBatch,
    MergeRequest,
    Message,
    RunLanded,
)


@dataclass(frozen=True)
class Built:
    """A batch's tree, waiting for a lane, gated, or waiting to land."""

    run_id: int
    base: str  # the commit it was built on: the target head, or the tree below it
    tree: str
    items: list[MergeRequest]
    started: float
    run_first: frozenset[str] = frozenset()


class Lanes:
    """Builds batches in order, gates them W at a time, lands them when told."""

    def __init__(self, merger: Merger, lanes: int, send: Callable[[Message], None]) -> None:
        self.merger, self.send = merger, send
        self.built: dict[int, Built] = {}  # run -> its tree, until it lands or is cancelled
        self.cancelled: set[int] = set()
        self.groups: dict[int, int] = {}  # run -> its running gate's process group
        self.jobs: queue.SimpleQueue[Built] = queue.SimpleQueue()
        ports = [0, *merger.config.lane_ports]  # 0: the merger's own PD_PORT_BASE
        for n in range(lanes):
            name = merger.integration_name if n == 0 else f"{merger.integration_name}-{n + 1}"
            port = ports[n] if n < len(ports) else 0
            # Daemon threads: a merger that leaves on SIGTERM does not wait for them (their
            # gates are killed, and ``leaving`` keeps them quiet).
            thread = threading.Thread(target=self._lane, args=(name, port), daemon=True)
            thread.name = f"pd-gate-{n + 1}"
            thread.start()

    def handle(self, message: Message) -> None:
        if isinstance(message, MergeBatch):
            self.start(message)
        elif isinstance(message, LandRun):
            self.send(self.land(message.run_id))
        elif isinstance(message, CancelRun):
            self.cancel(message.run_id)

    def start(self, batch: MergeBatch) -> None:
        """Build the batch's tree now (in message order), gate it when a lane is free;
        what leaves before the gate is answered at once."""
        began = time.monotonic()
        items = [MergeRequest(**{k: v for k, v in i.items() if k != "type"}) for i in batch.items]
        out = BatchResult(batch.run_id)
        try:
            head = self.merger.head()
            below = self.built.get(batch.base_run) if batch.base_run else None
            if batch.base_run and below is None:
                out.infrastructure = True
                out.reason = f"run {batch.base_run}, which it stacks on, has no tree here"
                self.send(out)
                return
            base = below.tree if below is not None else head
            commits = self.merger.commits(items, out)
            tree = self.merger.pretest(out, items, commits, base, head)
        except Exception as exc:  # git or the disk, not the branches: tried again
            self.merger.log(f"error building run {batch.run_id}:\n{traceback.format_exc()}")
            out = BatchResult(batch.run_id, reason=f"merger error: {exc}", infrastructure=True)
            tree = None
        if tree is None:
            out.seconds = time.monotonic() - began
            self.send(out)
            return
        first = frozenset(batch.run_first)
        self.built[batch.run_id] = Built(batch.run_id, base, tree, items, began, first)
        self.jobs.put(self.built[batch.run_id])

    def land(self, run_id: int) -> RunLanded:
        """Compare-and-swap the target from the run's base to its tree."""
        built = self.built.pop(run_id, None)
        if built is None:
            return RunLanded(run_id, moved=False, reason=f"no tested tree for run {run_id}")
        try:
            with held():  # never a moved ref with a checkout left behind
                if not creator_alive():
                    return RunLanded(run_id, moved=False, reason="the coordinator is gone")
                if self.merger.move(built.items, built.tree, built.base):
                    self.merger.sync(built.base, built.tree)
                    self.merger.log(f"run {run_id}: landed, head {built.tree[:12]}")
                    return RunLanded(run_id, moved=True, head=built.tree)
        except GitError as exc:
            return RunLanded(run_id, moved=False, reason=f"merger error: {exc}")
        target = self.merger.config.target_branch
        self.merger.log(f"run {run_id}: {target} moved since its tree was built; not landed")
        return RunLanded(run_id, moved=False, reason=f"{target} moved since run {run_id} began")

    def cancel(self, run_id: int) -> None:
        """Its result can no longer mean anything: kill its gate, send nothing."""
        self.cancelled.add(run_id)
        self.built.pop(run_id, None)
        group = self.groups.get(run_id)
        if group is not None:
            _kill(group)

    def _started(self, run_id: int, group: int) -> None:
        """A lane's gate began; a cancel that came first kills it at once. (Each side
        writes, then reads the other's: one of them sees the other.)"""
        self.groups[run_id] = group
        if run_id in self.cancelled:
            _kill(group)

    def _lane(self, worktree: str, port: int) -> None:
        while True:
            job = self.jobs.get()
            if job.run_id in self.cancelled:
                continue
            out = self._gate(job, worktree, port)
            if job.run_id not in self.cancelled:
                self.send(out)

    def _gate(self, job: Built, worktree: str, port: int) -> BatchResult:
        out = BatchResult(job.run_id, base=job.base, gated=True, tree=job.tree)
        names = ", ".join(i.task_id for i in job.items)
        try:
            started = partial(self._started, job.run_id)
            failed = self.merger.gate(
                job.run_id, job.items, job.tree, 0, worktree, started, port, job.run_first
            )
        except Exception as exc:
            self.merger.log(f"error gating run {job.run_id}:\n{traceback.format_exc()}")
            out.gated, out.infrastructure, out.reason = False, True, f"merger error: {exc}"
            failed = None
        finally:
            self.groups.pop(job.run_id, None)
        if failed is not None:
            out.reason, out.log_tail = failed.reason, failed.tail
            out.failed_tests = list(failed.tests)
            if len(job.items) == 1:
                self.merger.keep(job.items[0])
            self.merger.log(f"run {job.run_id} ({names}): gate failed: {out.reason}")
        elif not out.infrastructure:
            out.passed = True
            self.merger.log(f"run {job.run_id} ({names}): passed on {job.tree[:12]}")
        out.seconds = time.monotonic() - job.started
        return out


def _kill(group: int) -> None:
    """SIGKILL a cancelled gate's process group (its lane's ``run_shell`` reaps it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def serve_lanes(conn: Any, merger: Merger) -> None:
    """The merger's loop with parallel gates: messages in order on the main thread,
    answers from any thread, one at a time, none once the merger is leaving."""
    lock = threading.Lock()

    def send(message: Message) -> None:
        with lock:
            if not leaving():
                conn.send_bytes(message.to_bytes())

    lanes = Lanes(merger, merger.config.parallel, send)
    serve(conn, lanes.handle)
