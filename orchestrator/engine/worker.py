"""The worker process: holds one role, one worktree and one agent, runs one job at a time.

Three threads: the main thread runs jobs (``jobs.py``); a reader thread takes messages
off the pipe (so an abort reaches a worker that is busy in a model call or a command); a
heartbeat thread proves the process is alive however long a call takes.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from orchestrator.agent.protocol import Agent, Workspace
from orchestrator.agent.recorder import PARTS
from orchestrator.engine.agents import make_agent
from orchestrator.engine.child import child_setup
from orchestrator.engine.jobs import JobRunner, starts_on, transcript_name
from orchestrator.engine.workerconfig import WorkerConfig
from orchestrator.errors import InfraError, PdError
from orchestrator.limits.client import PermitClient
from orchestrator.record import processlog
from orchestrator.record.store import RunStore
from orchestrator.system import oshints, procs
from orchestrator.system.sandbox import Policy
from orchestrator.system.worktrees import WorktreeManager
from orchestrator.team.tools import scrub_env
from orchestrator.wire.messages import (
    AbortTask,
    HandOff,
    Heartbeat,
    Job,
    Message,
    PlanJob,
    Ready,
    ReviewJob,
    Shutdown,
    TaskFailed,
    TaskJob,
    TaskStarted,
    from_bytes,
)

__all__ = ["Worker", "WorkerConfig", "worker_main"]


class Channel:
    """The worker's end of the pipe; sends are locked because two threads send."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: Message) -> None:
        with self._lock:
            self.conn.send_bytes(message.to_bytes())


class Worker:
    """One worker's state inside its own process."""

    def __init__(
        self,
        worker_id: str,
        config: WorkerConfig,
        channel: Channel,
        permits: Connection | None = None,
        keys: dict[str, str] | None = None,
    ) -> None:
        self.id = worker_id
        self.keys = keys or {}  # never in os.environ: only the SDK client or CLI agent gets one
        self.config = config
        self.channel = channel
        self.inbox: queue.Queue[Message | None] = queue.Queue()
        self.abort_task: str | None = None
        self.handoff_task: str | None = None
        self.stopping = threading.Event()
        self.workspace: Workspace | None = None  # the running job's
        self.store = RunStore(Path(config.run_dir))  # for paths only: events are the coordinator's
        self.log_file = self.store.log_path(worker_id)
        self.env = {
            **scrub_env(os.environ),
            **config.env,
            "PD_WORKER_ID": worker_id,
            "PD_PORT_BASE": str(config.port_base),
            "PD_PORT_STRIDE": str(config.port_stride),
            "PD_RUN_ID": config.run_id,
        }
        self.policy = Policy.from_dict(config.sandbox)
        self.worktrees = WorktreeManager(
            Path(config.repo),
            Path(config.worktree_root),
            setup=config.setup,
            env=self.env,
            policy=self.policy,
        )
        self.current: str | None = None  # the task being attempted
        record_to = self.store.dir / PARTS / f"{worker_id}.jsonl" if config.record else None
        self.agent: Agent = make_agent(
            config,
            self.keys,
            permits=PermitClient(worker_id, permits) if permits is not None else None,
            should_stop=self.stop_requested,
            record_to=record_to,
        )
        self.jobs = JobRunner(self)

    def stop_requested(self) -> bool:
        """Whether the job running now should stop at its next safe point."""
        return self.stopping.is_set() or (
            self.current is not None and self.current in (self.abort_task, self.handoff_task)
        )

    def _abort_command(self) -> None:
        workspace = self.workspace  # read once: the main thread clears it
        if workspace is not None and workspace.toolbox is not None:
            workspace.toolbox.abort()

    # ---- threads -----------------------------------------------------------------

    def read_loop(self) -> None:
        """Route incoming messages: assignments queue up, aborts act at once."""
        while True:
            try:
                message = from_bytes(self.channel.conn.recv_bytes())
            except (EOFError, OSError):
                message = Shutdown(reason="coordinator gone")
            if isinstance(message, AbortTask | HandOff):
                if isinstance(message, HandOff):
                    self.handoff_task = message.task_id
                else:
                    self.abort_task = message.task_id
                self._abort_command()
            elif isinstance(message, Shutdown):
                self.stopping.set()
                self._abort_command()
                self.inbox.put(None)
                return
            else:
                self.inbox.put(message)

    def heartbeat_loop(self, interval: float) -> None:
        while not self.stopping.wait(interval):
            try:
                self.channel.send(Heartbeat(worker_id=self.id))
            except OSError:
                return

    # ---- work --------------------------------------------------------------------

    def log(self, task_id: str, text: str) -> None:
        processlog.write(self.log_file, self.id, task_id, text)

    def serve(self) -> None:
        while True:
            message = self.inbox.get()
            if message is None or self.stopping.is_set():
                return
            if isinstance(message, TaskJob | PlanJob | ReviewJob):
                self.channel.send(self.attempt(message))

    def attempt(self, job: Job) -> Message:
        """One attempt of one job, never raising: a failure is its answer."""
        self.abort_task, self.handoff_task, self.current = None, None, job.task_id
        self.channel.send(TaskStarted(worker_id=self.id, task_id=job.task_id, attempt=job.attempt))
        self.log(job.task_id, f"attempt {job.attempt} starts on {starts_on(job)}")
        try:
            transcript = self.store.transcript_path(job.task_id, transcript_name(job))
            with open(transcript, "a") as record_file:
                return self.jobs.run(job, record_file)
        # The tools answer the model their own OSErrors: one that reaches here is pd's
        # (its transcript, note or worktree files), as an InfraError is.
        except (InfraError, OSError) as exc:
            self.log(job.task_id, f"attempt {job.attempt} hit an infrastructure error: {exc}")
            return TaskFailed(
                worker_id=self.id,
                task_id=job.task_id,
                attempt=job.attempt,
                reason=str(exc),
                infrastructure=True,
            )
        except PdError as exc:
            reason = str(exc)
        except Exception as exc:  # the attempt fails, the worker lives on
            reason = f"internal error: {exc!r}"
            self.log(job.task_id, traceback.format_exc())
        finally:
            self.workspace = None
        self.log(job.task_id, f"attempt {job.attempt} failed: {reason}")
        return TaskFailed(
            worker_id=self.id, task_id=job.task_id, attempt=job.attempt, reason=reason
        )


def worker_main(
    conn: Connection,
    worker_id: str,
    config: dict[str, Any],
    keys: dict[str, str] | None = None,
    side: Connection | None = None,
) -> None:
    """Process entry point (``keys``: the API keys by variable name, held in memory only;
    ``side``: the permit pipe). Always says Ready (with the error if boot failed)."""
    child_setup()
    oshints.as_worker(worker_id)
    signal.signal(signal.SIGTERM, _on_sigterm)
    channel = Channel(conn)
    try:
        worker = Worker(worker_id, WorkerConfig.from_dict(config), channel, side, keys)
    except Exception as exc:
        channel.send(Ready(worker_id=worker_id, pid=os.getpid(), error=f"{exc}"))
        return
    channel.send(Ready(worker_id=worker_id, pid=os.getpid()))
    interval = worker.config.limits.heartbeat_interval
    threading.Thread(target=worker.read_loop, daemon=True, name="reader").start()
    threading.Thread(
        target=worker.heartbeat_loop, args=(interval,), daemon=True, name="heartbeat"
    ).start()
    worker.serve()
    worker.stopping.set()


def _on_sigterm(signum: int, frame: Any) -> None:
    """Second stage of shutdown: take the commands we started down with us."""
    procs.kill_all_running()
    os._exit(143)
