"""The coordinator: one process, one loop, deciding everything about a run.

Data flow (one coordinator, N workers, one merger; every arrow a pipe)::

    pd abort / pd handoff                                  the permit thread
      (control/*.json)                                     (limits: model-call permits,
            |                                               cost ledger, on its own pipes)
            v                                                       |
    +----------------- Coordinator (this module: the shell) -------+------------------+
    |  loop:                                                       | halted?          |
    |    Tick(halted, silent) ---+                                  v                  |
    |    pool.poll() -> Received | Died --+--> steps.step(run, input, now) -> effects |
    |    control requests -> Control -----+         |                      |           |
    |                                               v                      v           |
    |                                     RunState (runstate.py):   carried out here,  |
    |                                     graph, slots, head,       in order:          |
    |                                     merge queue, status       Emit -> run store  |
    |                                                               Send/Respawn/Kill  |
    |                                                                 -> pool          |
    +------------------------------------------------------------------|---------------+
          | TaskJob / PlanJob / ReviewJob     ^ TaskStarted, Progress,  | MergeBatch, LandRun,
          v                                   | TaskDone, TaskFailed... v CancelRun  ^ BatchResult,
    +-------------+  +-------------+                              +-------------+ | RunLanded
    |  worker w1  |  |  worker w2  |  ...                         |   merger    |-+
    | (worktree)  |  | (worktree)  |                              | gate, then  |
    +-------------+  +-------------+                              | CAS target; |
                                                                  | W gates at  |
                                                                  | once: lanes |
                                                                  +-------------+

The decisions live in ``engine.steps`` and do no I/O; this shell owns the processes,
the run store and the clock. It never blocks on slow work: model calls and commands run
in workers, gates in the merger. It waits on worker pipes and process sentinels (a crash
is noticed at once), and records what happened before acting on it: the pool holds
every send, spawn or kill until the events before it are durable (group commit: one
fsync per turn of the loop, started before it waits and made on a thread of its own,
so the next turn's work overlaps the disk's).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from filelock import FileLock, Timeout

from orchestrator.agent import recorder
from orchestrator.engine import steps
from orchestrator.engine.apikeys import key_names, take_keys
from orchestrator.engine.child import child_setup
from orchestrator.engine.configs import merger_config, worker_config
from orchestrator.engine.journal import Journal
from orchestrator.engine.merger import merger_main
from orchestrator.engine.pool import PoolEvent, WorkerPool, create_time_of
from orchestrator.engine.preflight import RunPlan, plan_payload
from orchestrator.engine.runstate import MERGER, RunRules, RunState, SlotState
from orchestrator.engine.snapshot import snapshot_text
from orchestrator.engine.steps.effects import (
    Answer,
    Effect,
    Emit,
    Kill,
    NoteSession,
    Respawn,
    Retire,
    Send,
    Show,
)
from orchestrator.engine.steps.inputs import Control, Died, Input, Received, Tick
from orchestrator.engine.worker import worker_main
from orchestrator.errors import BadInput, InfraError, PdError
from orchestrator.limits.meter import Metering
from orchestrator.limits.permit_thread import PermitLoop
from orchestrator.planning.taskplan import planner_skills
from orchestrator.providers import preload_modules
from orchestrator.record import control
from orchestrator.record import events as ev
from orchestrator.record.linefile import LineFile
from orchestrator.record.store import RunStore
from orchestrator.system import oshints
from orchestrator.system.gitutil import is_ancestor, rev_parse
from orchestrator.system.targetlock import TargetLock
from orchestrator.system.worktrees import (
    WorktreeManager,
    drop_spent_branches,
    exclude_from_status,
)
from orchestrator.team.skills import load_registry
from orchestrator.wire.messages import BatchResult, Ready, RunLanded, UsageReport

TICK = 0.2
# How often the loop lists control/ for `pd abort` and `pd handoff` requests: a person
# does not notice 20 ms, and a listing every turn cost the loop more than a task's event.
CONTROL_INTERVAL = 0.02
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
# How long an aborted merger may take to stop: killing a gate is quick, and a ref move
# it had begun finishes (update-ref plus the checkout sync) before it leaves.
MERGER_STOP_WAIT = 30.0


def system_error(error: OSError) -> InfraError:
    """An OS error the loop met (the disk, a file, a limit): the user's to fix."""
    return InfraError(
        f"the run stopped on a system error: {error} "
        "(fix it, free disk space say, then `pd resume`)"
    )


def _merger_entry(conn: Any, worker_id: str, config: dict[str, Any]) -> None:
    child_setup()
    merger_main(conn, config)


class Coordinator:
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
        self.journal = Journal(
            store,
            on_event,
            lambda **final: snapshot_text(self, **final),
            lambda: len(self.state.graph),
        )
        path = store.session_log_path  # a resumed run goes on with the lines it had
        rules = RunRules(
            run_id=store.run_id,
            mission=plan.mission,
            roles=plan.roles,
            workers=list(plan.workers),
            gate_command=plan.gate_command,
            target_branch=plan.target_branch,
            escalation=bool(plan.provider.escalation),
            gate_parallel=plan.gate_parallel,
            running_note=self._running_note,
        )
        self.state = RunState(
            rules,
            plan.graph,
            plan.start_head,
            planning=plan.planning,
            session=path.read_text().splitlines() if path.exists() else [],
        )
        config = plan.mission.provider
        # Before any child starts: keys go to workers as spawn arguments (see apikeys).
        self.keys = take_keys(key_names(config.name, config.agent, config.pass_env))
        preload = [*CHILD_MODULES, *preload_modules(plan.provider.name)]
        # Group commit: the pool commits the store before every effect it makes.
        self.pool = WorkerPool(start_method, preload=preload, record=store.group_commit())
        self.metering = Metering.for_run(
            plan.mission,
            plan.provider.name,
            plan.provider.prices,
            store.events(),
            self.journal.record_soon,
        )
        self.permits = PermitLoop(self.metering)
        self.root = plan.worktree_root / store.run_id
        self.started_at = time.time()
        self.create_time = create_time_of(os.getpid())
        self._signals = 0
        self._controls_read = 0.0
        self._session_log = LineFile(store.session_log_path)

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
            while self._turn():
                pass
            return self._finish()
        except BaseException as error:
            with contextlib.suppress(PdError):  # a failed disk: stopped all the same
                self._teardown()
            if not isinstance(error, OSError | InfraError):
                raise
            broken = error if isinstance(error, InfraError) else system_error(error)
            with contextlib.suppress(OSError, PdError):  # `pd status` says why, if it can
                self.journal.write_state(force=True, status="broken", hint=str(broken))
            if broken is error:
                raise
            raise broken from error
        finally:  # each runs even when one before it raises (a failed disk fails close)
            with contextlib.ExitStack() as release:
                release.callback(lock.release)
                release.callback(target.release)
                release.callback(self._session_log.close)
                self.store.close()

    def _start(self) -> None:
        exclude_from_status(self.plan.repo, [self.plan.worktree_root, self.plan.workspace / ".pd"])
        started = ev.RunStarted(
            mission=self.plan.mission.name,
            repo=str(self.plan.repo),
            target_branch=self.plan.target_branch,
            head=self.state.head,
            workers=dict(self.plan.workers),
            pid=os.getpid(),
        )
        self.journal.record(started)
        if self.state.planning_open:  # what the producer's job carries besides its attempt
            role = self.plan.roles[self.state.planning.role]  # type: ignore[union-attr]
            skills = planner_skills(role, load_registry(self.plan.workspace))
            self.state.plan_payload = plan_payload(self.plan, skills)
        self.permits.start()
        self.pool.spawn(MERGER, _merger_entry, merger_config(self.plan, self.store, self.root))
        for slot in self.state.slots.values():
            handle = self.pool.spawn(
                slot.id,
                worker_main,
                worker_config(self.plan, self.store, self.root, slot.id, slot.role),
                self.keys,
                side_channel=True,
            )
            self.permits.attach(slot.id, slot.role, handle.side)  # type: ignore[arg-type]
            self.journal.record(ev.WorkerSpawned(worker=slot.id, role=slot.role))
        self._carry_out(steps.start(self.state))

    def _turn(self) -> bool:
        """One turn of the loop; False once the run is over."""
        limits = self.plan.mission.limits
        silence = limits.heartbeat_interval * limits.missed_heartbeats
        silent = self.pool.silent(silence, boot_grace=max(60.0, silence))
        self._step(Tick(halted=self.metering.halted(), silent=silent, silence=silence))
        if steps.finished(self.state):
            return False
        # Before waiting, the turn's events go to the disk (one fsync, on the store's
        # syncer thread); the pool sends their messages when it ends, while we read on.
        self.store.sync_soon()
        self._session_log.flush()
        for event in self.pool.poll(TICK):
            self._step(self._input_of(event))
        self.journal.tell_recorded()
        if (now := time.monotonic()) - self._controls_read >= CONTROL_INTERVAL:
            self._controls_read = now
            for request in control.take_requests(self.store):
                self._step(Control(request))
        self.journal.write_state()
        return True

    def _input_of(self, event: PoolEvent) -> Input:
        if event.died:
            return Died(event.worker_id, event.exitcode)
        message = event.message
        if isinstance(message, Ready) and event.worker_id in self.pool.workers:
            self.pool.workers[event.worker_id].ready = True
        return Received(event.worker_id, message)  # type: ignore[arg-type]

    def _step(self, event: Input) -> None:
        if isinstance(event, Received) and isinstance(event.message, UsageReport):
            # An agent CLI's usage: the limits' business (permits have pipes of their own).
            self.metering.handle(event.worker, self.state.slots[event.worker].role, event.message)
            return
        self._carry_out(steps.step(self.state, event, time.monotonic()))

    def _finish(self) -> int:
        if self.state.aborting:
            self._stop_merger()
        self._carry_out(steps.wind_down(self.state))
        self._teardown(grace=0.1 if self.state.aborting else 0.8)
        if self.plan.record and (cassette := recorder.assemble(self.store.dir)):
            self.journal.record(ev.CassetteRecorded(path=str(cassette)))
        self.plan.graph = self.state.graph  # a planned goal's graph, for whoever reads on
        code, status = steps.outcome(self.state)
        counts = self.state.graph.counts()
        self.journal.record(
            ev.RunFinished(status=status, exit_code=code, head=self.state.head, counts=counts)
        )
        self.journal.write_state(force=True, status=status, exit_code=code)
        return code

    def _teardown(self, grace: float = 0.8) -> None:
        """Stop every process and remove every worktree; safe to call twice. ``grace``:
        how long workers get to end their attempt before SIGTERM (which kills their
        commands too); short on an abort, which throws the attempts away anyway."""
        try:
            self.pool.shutdown_all(grace=grace)  # stops every process even on a failed disk
        finally:
            self.permits.stop()
            self.journal.tell_recorded()
            for slot in self.state.slots.values():
                if slot.state != SlotState.RETIRED:
                    slot.state, slot.task = SlotState.STOPPED, None
            WorktreeManager(self.plan.repo, self.root).remove_all()
            drop_spent_branches(self.plan.repo, self.store.run_id, self.state.head)

    def _stop_merger(self) -> None:
        """Abort: stop the running gates before they can move the target branch. A
        verdict or a landing the merger sent first, or a move it had begun (a ref move
        always finishes with its checkout sync), is recorded: the run's record agrees
        with the target."""
        handle = self.pool.workers.get(MERGER)
        if handle is None:
            return
        if handle.process.is_alive():
            handle.process.terminate()  # SIGTERM: it kills its gate and leaves
            handle.process.join(MERGER_STOP_WAIT)
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join()
        for event in self.pool.drain(MERGER):
            if isinstance(event.message, BatchResult | RunLanded):
                self._step(Received(MERGER, event.message))
        merges, known = self.state.merges, self.state.head
        head = rev_parse(self.plan.repo, f"refs/heads/{self.plan.target_branch}")
        if not head or head == known:
            return
        for flight in merges.at_merger():  # only a landing batch (one gate: any) can move it
            commits = [merges.request(t).commit for t in flight.tasks() if t in merges.key_of]
            if not commits or not all(is_ancestor(self.plan.repo, c, head) for c in commits):
                continue
            if flight.run_id in merges.landing:  # landed untold
                self._step(Received(MERGER, RunLanded(flight.run_id, moved=True, head=head)))
            elif merges.lands_itself:
                landed = BatchResult(flight.run_id, gated=True, passed=True, head=head)
                self._step(Received(MERGER, landed))

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: Any) -> None:
            self._signals += 1
            if self._signals > 1:
                raise KeyboardInterrupt
            self.state.abort(f"interrupted by {signal.Signals(signum).name}")

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def _running_note(self, task_id: str, attempt: int) -> str:
        """The note the worker kept current during the attempt it could not finish."""
        try:
            return self.store.handoff_path(task_id, attempt).read_text()
        except OSError:
            return ""

    # ---- effects -----------------------------------------------------------------

    def _carry_out(self, effects: list[Effect]) -> None:
        """Do what a step decided, in its order (the pool commits the record before every
        send, spawn and kill)."""
        for effect in effects:
            match effect:
                case Emit():
                    self.journal.record(effect.event, effect.sync)
                case Send():
                    self.pool.send(effect.worker, effect.message)
                case NoteSession(line=line):
                    self._session_log.write(line)
                case Show(event=event):
                    self.journal.show(event)
                case Respawn(worker=worker):
                    self._respawn(worker)
                case Kill(worker=worker):
                    self.pool.kill(worker)
                case Retire(worker=worker) if worker in self.pool.workers:
                    self.pool.remove(worker)
                case Answer(request=request, problem=problem):
                    self.store.write_out()  # whoever reads the answer may read the events
                    control.answer(self.store, request, problem)

    def _respawn(self, worker: str) -> None:
        """A fresh process (a worker's with a permit pipe of its own)."""
        handle = self.pool.restart(worker)
        if worker == MERGER:
            return
        self.permits.attach(worker, self.state.slots[worker].role, handle.side)  # type: ignore[arg-type]
        self.journal.record(
            ev.WorkerRespawned(worker=worker, pid=handle.pid, restarts=handle.restarts)
        )
