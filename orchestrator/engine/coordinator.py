"""The coordinator: one process, one loop, deciding everything about a run.

It never blocks on slow work: model calls and commands run in workers, gates in the
merger. The loop waits on worker pipes and process sentinels (a crash is noticed at
once), then hands out ready tasks, reads control requests, checks heartbeats, and writes
what happened to the run store before acting on it.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.agent import recorder
from orchestrator.engine.apikeys import key_names, take_keys
from orchestrator.engine.configs import (
    MERGER,
    merger_config,
    worker_config,
)
from orchestrator.engine.control_answers import ControlSteps
from orchestrator.engine.mergequeue import MergeQueue
from orchestrator.engine.merger import merger_main
from orchestrator.engine.merging import MergeSteps
from orchestrator.engine.planning_step import PlanningSteps
from orchestrator.engine.pool import PoolEvent, WorkerPool, child_setup, create_time_of
from orchestrator.engine.preflight import RunPlan
from orchestrator.engine.reviewflow import ReviewFlow
from orchestrator.engine.snapshot import Slot, SlotState, snapshot_text, state_interval
from orchestrator.engine.worker import worker_main
from orchestrator.errors import BadInput
from orchestrator.limits.meter import Metering
from orchestrator.limits.permit_thread import PermitLoop
from orchestrator.planning.taskplan import PLAN_ID
from orchestrator.providers import preload_modules
from orchestrator.record import control
from orchestrator.record import events as ev
from orchestrator.record.eventtext import format_event, stamp
from orchestrator.record.store import RunStore
from orchestrator.system import oshints
from orchestrator.system.gitutil import git, is_ancestor
from orchestrator.system.targetlock import TargetLock
from orchestrator.system.worktrees import WorktreeManager, exclude_from_status, task_branch
from orchestrator.tasks.scheduling import fits, match
from orchestrator.tasks.taskgraph import LANDED, TaskState
from orchestrator.tasks.transitions import Change, apply
from orchestrator.wire.messages import (
    HandedOff,
    Message,
    PlanDone,
    Progress,
    Ready,
    ReviewDone,
    TaskDone,
    TaskFailed,
    TaskJob,
    TaskStarted,
    UsageReport,
)

SESSION_LINES = 40  # of the session log, in each assignment
MAX_CRASHES = 5  # per worker slot; past this the slot is retired (circuit breaker)
TICK = 0.2
# How long a thread may hold the GIL while another wants it (CPython's default: 5 ms).
# The permit thread answers within this even while the main loop runs Python code.
SWITCH_INTERVAL = 0.00005
# What every child imports, for the forkserver to import once for all of them.
# ``prewarm`` last: it loads the skill catalog with the modules above already imported.
CHILD_MODULES = (
    "orchestrator.engine.worker",
    "orchestrator.engine.merger",
    "orchestrator.engine.prewarm",
)


def _merger_entry(conn: Any, worker_id: str, config: dict[str, Any]) -> None:
    child_setup()
    merger_main(conn, config)


class Coordinator(PlanningSteps, ReviewFlow, ControlSteps, MergeSteps):
    """Runs one plan to the end; ``run()`` returns the exit code."""

    def __init__(
        self,
        plan: RunPlan,
        store: RunStore,
        on_event: Callable[[ev.Event], None] | None = None,
        start_method: str | None = None,
    ) -> None:
        self.plan = plan
        self.store = store
        self.graph = plan.graph
        self.planning = plan.planning  # a goal mission: the graph comes from the producer
        self._plan_payload: dict[str, Any] | None = None
        self.on_event = on_event or (lambda event: None)
        preload = [*CHILD_MODULES, *preload_modules(plan.provider.name)]
        config = plan.mission.provider
        # Before any child starts: keys go to workers as spawn arguments (see apikeys).
        self.keys = take_keys(key_names(config.name, config.agent, config.pass_env))
        # Group commit: the pool commits the store before every effect it makes.
        self.pool = WorkerPool(start_method, preload=preload, record=store.group_commit())
        self.slots = {wid: Slot(wid, role) for wid, role in plan.workers}
        self.head = plan.start_head
        self.merges = MergeQueue()
        self.abort_reason: str | None = None
        self.metering = Metering.for_run(
            plan.mission,
            plan.provider.name,
            plan.provider.prices,
            store.events(),
            self._record_soon,
        )
        self.permits = PermitLoop(self.metering)
        self._recorded: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.assigned_at: dict[str, float] = {}  # Assign sent -> started = dispatch
        self.review_tried: dict[str, set[str]] = {}
        self.root = plan.worktree_root / store.run_id
        self.started_at = time.time()
        self.create_time = create_time_of(os.getpid())
        self._state_dirty = True
        self._state_written = 0.0
        self._signals = 0
        self._log: Any = None
        path = store.session_log_path  # a resumed run goes on with the lines it had
        self.session = path.read_text().splitlines() if path.exists() else []

    # ---- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        lock = FileLock(self.store.lock_path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise BadInput(
                str(self.store.dir),
                "another coordinator is running this run",
                "wait for it, or stop it with `pd abort`",
            ) from None
        target = TargetLock(self.plan.repo, self.plan.target_branch)
        try:
            target.acquire(self.store.run_id, self.plan.workspace)
        except BaseException:
            lock.release()
            raise
        try:
            self._install_signals()
            sys.setswitchinterval(SWITCH_INTERVAL)
            oshints.name_thread("pd-coordinator")
            self._start()
            while not self._finished():
                self._step()
            return self._finish()
        except BaseException:
            self._teardown()
            raise
        finally:
            self.store.close()
            if self._log is not None:
                self._log.close()
            target.release()
            lock.release()

    def _start(self) -> None:
        exclude_from_status(self.plan.repo, [self.plan.worktree_root, self.plan.workspace / ".pd"])
        self.emit(
            ev.RunStarted(
                mission=self.plan.mission.name,
                repo=str(self.plan.repo),
                target_branch=self.plan.target_branch,
                head=self.head,
                workers=dict(self.plan.workers),
                pid=os.getpid(),
            )
        )
        self.permits.start()
        self.pool.spawn(MERGER, _merger_entry, merger_config(self.plan, self.store, self.root))
        for slot in self.slots.values():
            handle = self.pool.spawn(
                slot.id,
                worker_main,
                worker_config(self.plan, self.store, self.root, slot.id, slot.role),
                self.keys,
                side_channel=True,
            )
            self.permits.attach(slot.id, slot.role, handle.side)  # type: ignore[arg-type]
            self.emit(ev.WorkerSpawned(worker=slot.id, role=slot.role))
        self._requeue_approved()

    def _finished(self) -> bool:
        if self.abort_reason:
            return True
        if self._planning_open():
            return self._planning_over() is not None
        if self._halted():  # no new work; what is running and merging finishes
            running = self.graph.count(TaskState.RUNNING)
            return not running and not self._reviews_in_flight() and self.merges.idle
        return (self.graph.done() and self.merges.idle) or self._stalled()

    def _halted(self) -> str | None:
        return self.metering.halted()

    def _stalled(self) -> bool:
        """No live worker can take any task that is still waiting: the run cannot go on."""
        live = [s for s in self.slots.values() if s.state != SlotState.RETIRED]
        waiting = (TaskState.PENDING, TaskState.RUNNING)  # counted, not scanned: every step
        reviewing = self.graph.count(TaskState.REVIEWING)
        if not self.merges.idle or not (sum(map(self.graph.count, waiting)) or reviewing):
            return False
        if self._reviewable(live):
            return False
        tasks = self.graph.any_in(*waiting)
        return not any(fits(t, self.plan.roles[s.role]) for t in tasks for s in live)

    def _step(self) -> None:
        self._assign()
        for event in self.pool.poll(TICK):
            self._handle(event)
        self._present_recorded()
        for request in control.take_requests(self.store):
            self._control(request)
        self._check_health()
        self.store.sync()
        self._write_state()

    def _finish(self) -> int:
        if self.abort_reason:
            self._stop_merger()
            changed = [
                t.id
                for t in self.graph
                if t.state not in (*LANDED, TaskState.FAILED, TaskState.BLOCKED, TaskState.ABORTED)
            ]
            self.graph.abort_all()
            self.emit(ev.RunAborted(reason=self.abort_reason, tasks=changed))
        elif halted := self._halted():
            stopped = [t.id for t in self.graph if t.state is TaskState.PENDING]
            self.graph.abort_all()
            self.emit(ev.RunStopped(reason=halted, tasks=stopped))
        elif self._planning_open():
            self.emit(ev.RunStalled(reason=self._planning_over()))
        elif self._stalled():
            self.emit(ev.RunStalled(reason="no live worker can take the remaining tasks"))
            self.graph.abort_all()
        self._teardown(grace=0.1 if self.abort_reason else 0.8)
        if self.plan.record and (cassette := recorder.assemble(self.store.dir)):
            self.emit(ev.CassetteRecorded(path=str(cassette)))
        counts = self.graph.counts()
        landed = sum(counts.get(str(state), 0) for state in LANDED)
        merged_all = landed == len(self.graph) and not self._unplanned()
        code = 130 if self.abort_reason else (0 if merged_all else 1)
        status = "aborted" if self.abort_reason else ("finished" if merged_all else "failed")
        if self._halted() and not self.abort_reason and not merged_all:
            budget = "budget exhausted" in (self._halted() or "")
            status = "budget exhausted" if budget else "stopped"
        elif self._unplanned() and not self.abort_reason:
            status = "planning failed"
        self.emit(ev.RunFinished(status=status, exit_code=code, head=self.head, counts=counts))
        self._write_state(force=True, status=status, exit_code=code)
        return code

    def _teardown(self, grace: float = 0.8) -> None:
        """Stop every process and remove every worktree; safe to call twice. ``grace``:
        how long workers get to end their attempt before SIGTERM (which kills their
        commands too); short on an abort, which throws the attempts away anyway."""
        self.pool.shutdown_all(grace=grace)
        self.permits.stop()
        self._present_recorded()
        for slot in self.slots.values():
            if slot.state != SlotState.RETIRED:
                slot.state, slot.task = "stopped", None
        WorktreeManager(self.plan.repo, self.root).remove_all()
        self._drop_spent_branches()

    def _drop_spent_branches(self) -> None:
        """Delete this run's task branches whose commit is already in the target (merged,
        or never got a commit); branches holding unmerged work stay."""
        prefix = f"refs/heads/pd/{self.store.run_id}/"
        listing = git(
            self.plan.repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix, check=False
        )
        for line in listing.splitlines():
            ref, commit = line.split()
            if is_ancestor(self.plan.repo, commit, self.head):
                git(self.plan.repo, "update-ref", "-d", ref, commit, check=False)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:
                raise KeyboardInterrupt
            self.abort_reason = f"interrupted by {signal.Signals(signum).name}"

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    # ---- scheduling --------------------------------------------------------------

    def _assign(self) -> None:
        if self._halted():
            return
        if self._planning_open():
            self._assign_plan()
            return
        self._assign_reviews()  # first: a verdict lets finished work merge
        ready = self.graph.ready()  # each stamped by the graph when it became ready
        idle = [s.id for s in self.slots.values() if s.state == SlotState.IDLE]
        if not idle or not ready:
            return
        busy = [f for t in self.graph.any_in(TaskState.RUNNING) for f in t.files]
        roles = {wid: self.plan.roles[self.slots[wid].role] for wid in idle}
        for worker_id, task in match(ready, idle, roles, busy, self.graph.ready_needs()):
            self._start_task(self.slots[worker_id], task)

    def _start_task(self, slot: Slot, task: Any) -> None:
        branch = task_branch(self.store.run_id, task.id)
        started = apply(
            self.graph, ev.TaskAssigned(task=task.id, worker=slot.id, branch=branch, base=self.head)
        ).event
        attempt = started.attempt
        escalate = self.graph.escalated(task.id)
        deps = {d: self.graph.get(d).summary for d in task.deps}
        message = TaskJob(
            task_id=task.id,
            attempt=attempt,
            title=task.title,
            description=task.description,
            branch=branch,
            target_head=self.head,
            files=list(task.files),
            feedback=list(task.feedback),
            handoff=task.handoff,
            dependencies=deps,
            escalate=escalate,
            start_from=task.start_from or "",
            context_files=list(self.plan.mission.context_files),
            session=self.session[-SESSION_LINES:],
        )
        slot.state, slot.task, slot.attempt = SlotState.BUSY, task.id, attempt
        self.emit(
            dataclasses.replace(started, escalated=escalate and bool(self.plan.provider.escalation))
        )
        self.assigned_at[task.id] = time.monotonic()
        self.pool.send(slot.id, message)

    # ---- messages ----------------------------------------------------------------

    def _handle(self, event: PoolEvent) -> None:
        if event.worker_id == MERGER:
            self._handle_merger(event)
        elif event.died:
            self._worker_died(event.worker_id, event.exitcode)
        else:
            self._handle_worker(self.slots[event.worker_id], event.message)

    def _handle_worker(self, slot: Slot, message: Message | None) -> None:
        if self._review_message(slot, message):
            return
        if isinstance(message, Ready):
            self._worker_ready(slot, message)
        elif isinstance(message, TaskStarted):
            ready_at = self.graph.take_ready_at(message.task_id)
            waited = message.at - (message.at if ready_at is None else ready_at)
            dispatch = message.at - self.assigned_at.pop(message.task_id, message.at)
            self.emit(
                ev.TaskStarted(
                    task=message.task_id,
                    worker=slot.id,
                    attempt=message.attempt,
                    waited=round(max(waited, 0.0), 4),
                    dispatch=round(max(dispatch, 0.0), 4),
                ),
                sync=False,
            )
        elif isinstance(message, Progress):
            self.on_event(
                ev.Progress(worker=slot.id, task=message.task_id, text=message.text, at=time.time())
            )
        elif isinstance(message, TaskDone):
            self._task_done(slot, message)
        elif isinstance(message, PlanDone):
            self._plan_done(slot, message)
        elif isinstance(message, UsageReport):  # permits have a pipe of their own
            self.metering.handle(slot.id, slot.role, message)
        elif isinstance(message, TaskFailed | HandedOff):
            self._skills_used(slot, message, "task")
            self._release(slot, message.task_id)
            if isinstance(message, HandedOff):
                self._handed_off(slot, message)
            elif message.infrastructure and message.task_id != PLAN_ID:
                self._infra_failed(message.task_id, message.reason, worker=slot.id)
            else:
                self._attempt_failed(
                    message.task_id, message.reason, message.handoff, worker=slot.id
                )

    def _worker_ready(self, slot: Slot, message: Ready) -> None:
        handle = self.pool.workers[slot.id]
        if message.error:
            self.emit(ev.WorkerFailedToStart(worker=slot.id, error=message.error))
            self._retire(slot)
            return
        handle.ready = True
        slot.state = SlotState.IDLE
        self.emit(ev.WorkerReady(worker=slot.id, pid=message.pid))

    def _skills_used(
        self,
        slot: Slot,
        message: TaskDone | TaskFailed | HandedOff | PlanDone | ReviewDone,
        kind: str,
    ) -> None:
        if message.skills:
            self.emit(
                ev.SkillsUsed(
                    task=message.task_id,
                    worker=slot.id,
                    role=slot.role,
                    attempt=message.attempt,
                    attempt_kind=kind,
                    offered=message.skills.get("offered", []),
                    used=message.skills.get("used", []),
                ),
                sync=False,
            )

    def _task_done(self, slot: Slot, message: TaskDone) -> None:
        self._skills_used(slot, message, "task")
        self._release(slot, message.task_id)
        if self.graph.get(message.task_id).state is not TaskState.RUNNING:
            return  # aborted meanwhile: its branch stays, it is not merged
        if message.already_merged:
            self._already_merged(message.task_id, message.attempt, message.commit)
            return
        submitted = ev.TaskSubmitted(
            task=message.task_id,
            worker=slot.id,
            attempt=message.attempt,
            commit=message.commit,
            files=message.changed_files,
            summary=message.summary,
            branch=message.branch,
            state="",
        )
        self.transition(submitted)
        task = self.graph.get(message.task_id)
        self._after_submit(task, task.state)

    def _release(self, slot: Slot, task_id: str) -> None:
        if slot.task == task_id:
            slot.task, slot.state = None, SlotState.IDLE

    def _attempt_failed(self, task_id: str, reason: str, handoff: str = "", **extra: Any) -> None:
        if task_id == PLAN_ID and self._planning_open():
            self._plan_failed(reason, **extra)
            return
        task = self.graph.get(task_id)
        if task.state not in (TaskState.RUNNING, TaskState.MERGING):
            return
        failed = ev.AttemptFailed(
            task=task_id, attempt=task.attempts, reason=reason, state="", handoff=handoff, **extra
        )
        change = self.transition(failed)
        self._failed_for_good(task, change.blocked)

    def _failed_for_good(self, task: Any, blocked: list[str]) -> None:
        if task.state is TaskState.FAILED:
            self.emit(ev.TaskFailed(task=task.id, attempts=task.attempts, blocked=blocked))

    def _infra_failed(self, task_id: str, reason: str, **extra: Any) -> None:
        """Retried as if it never ran: the agent is not charged and never sees it."""
        task = self.graph.get(task_id)
        if task.state not in (TaskState.RUNNING, TaskState.MERGING):
            return
        broke = ev.AttemptInfraFailed(
            task=task_id, attempt=task.attempts, reason=reason, state="", **extra
        )
        change = self.transition(broke)
        self._failed_for_good(task, change.blocked)
        if task.state is TaskState.MERGING:  # the merge is tried again
            self._queue_merge(task)

    # ---- health and control ------------------------------------------------------

    def _worker_died(self, worker_id: str, exitcode: int | None) -> None:
        slot = self.slots[worker_id]
        self._review_interrupted(slot, f"worker {worker_id} died (exit code {exitcode})")
        task = slot.task
        slot.task, slot.crashes = None, slot.crashes + 1
        # Its calls are given up by the permit thread once it has read the dead pipe out.
        self.emit(ev.WorkerCrashed(worker=worker_id, exitcode=exitcode, task=task))
        if task is not None:
            self._attempt_failed(
                task,
                f"worker {worker_id} died (exit code {exitcode}) during the attempt",
                self._running_note(task),
                worker=worker_id,
            )
        if self.abort_reason:
            return
        if slot.crashes > MAX_CRASHES:
            self._retire(slot)
            return
        self._respawn(slot)

    def _respawn(self, slot: Slot) -> None:
        """A fresh process in the slot, with a permit pipe of its own."""
        handle = self.pool.restart(slot.id)
        self.permits.attach(slot.id, slot.role, handle.side)  # type: ignore[arg-type]
        slot.state = SlotState.BOOTING
        self.emit(ev.WorkerRespawned(worker=slot.id, pid=handle.pid, restarts=handle.restarts))

    def _retire(self, slot: Slot) -> None:
        if slot.id in self.pool.workers:
            self.pool.remove(slot.id)
        slot.state, slot.task = SlotState.RETIRED, None
        self.emit(ev.WorkerRetired(worker=slot.id, crashes=slot.crashes))

    def _check_health(self) -> None:
        limits = self.plan.mission.limits
        silence = limits.heartbeat_interval * limits.missed_heartbeats
        for worker_id in self.pool.silent(silence, boot_grace=max(60.0, silence)):
            if worker_id == MERGER:
                continue  # the merger runs long gates without heartbeats; gates time out
            self.emit(ev.HeartbeatMissed(worker=worker_id, seconds=silence))
            self.pool.kill(worker_id)  # its death arrives through poll() like a crash

    # ---- the record --------------------------------------------------------------

    def transition(self, event: ev.Event) -> Change:
        """The one way the run changes a task: apply ``event`` to the graph (the
        transition fills in its outcome) and record what it returns, before any effect."""
        change = apply(self.graph, event)
        self.emit(change.event)
        return change

    def emit(self, event: ev.Event, sync: bool = True) -> None:
        """Record first, then tell: the event log is the truth others rebuild from.
        ``sync=False`` (informational) is made durable once per loop step instead."""
        self._present(self.store.append(event, sync=sync))

    def _record_soon(self, event: ev.Event) -> None:
        """``emit`` for the permit thread: recorded at once (the store is thread-safe),
        durable by the end of the step, told by the main loop."""
        self._recorded.put(self.store.append(event, sync=False))

    def _present_recorded(self) -> None:
        while True:
            try:
                self._present(self._recorded.get_nowait())
            except queue.Empty:
                return

    def _present(self, event: ev.Event) -> None:
        self._state_dirty = True
        line = format_event(event)
        if line is not None:
            if self._log is None:  # opened once: an open per event cost the loop time
                self._log = open(self.store.log_path("coordinator"), "a", buffering=1)  # noqa: SIM115
            self._log.write(
                f"{stamp(event.at)} [coordinator] [{getattr(event, 'task', None) or '-'}] {line}\n"
            )
        self.on_event(event)

    def _write_state(self, force: bool = False, **final: Any) -> None:
        now = time.monotonic()
        waited = now - self._state_written
        if not force and (not self._state_dirty or waited < state_interval(len(self.graph))):
            return
        self.store.write_state_text(snapshot_text(self, **final))
        self._state_dirty, self._state_written = False, now
