"""The worker process: holds one role and one worktree, runs one task attempt at a time.

Three threads: the main thread runs attempts; a reader thread takes messages off the
pipe (so an abort reaches a worker that is busy in a model call or a command); a
heartbeat thread proves the process is alive however long a call takes.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from orchestrator.agent.attempt import (
    LiveLines,
    RunningNote,
    commit_work,
    context_block,
    holder_of_no_change,
    task_prompt,
)
from orchestrator.agent.external import run_command_agent
from orchestrator.agent.external.registry import DEFAULT_KEYS
from orchestrator.agent.loop import AgentResult, run_agent
from orchestrator.agent.recorder import PARTS, RecordingProvider
from orchestrator.agent.reviewer import review_diff, review_prompt, review_toolbox, verdict_message
from orchestrator.engine.pool import child_setup
from orchestrator.engine.providercheck import KEY_ENV
from orchestrator.errors import GitError, InfraError, PdError, ProviderError
from orchestrator.limits.client import MeteredProvider, PermitClient, estimate
from orchestrator.planning.producer import planner_toolbox, run_planner
from orchestrator.providers import Provider, make_provider
from orchestrator.record.store import RunStore
from orchestrator.system import oshints, procs
from orchestrator.system.sandbox import Policy, Sandbox
from orchestrator.system.worktrees import WorktreeManager
from orchestrator.team.skills import Skill, SkillToolbox, choose_skills, load_registry, model_ranker
from orchestrator.team.tools import Toolbox, scrub_env
from orchestrator.wire.messages import (
    AbortTask,
    Assign,
    HandOff,
    Heartbeat,
    Message,
    PlanDone,
    Progress,
    Ready,
    Shutdown,
    TaskDone,
    TaskFailed,
    TaskStarted,
    UsageReport,
    from_bytes,
)

# What coding-agent CLIs leave in a worktree about themselves: never part of the work.
AGENT_ARTIFACTS = (".aider.chat.history.md", ".aider.input.history", ".aider.tags.cache.v3")


@dataclass
class WorkerConfig:
    """Everything a worker needs, as plain data so it crosses a spawn boundary."""

    run_id: str
    run_dir: str
    repo: str
    worktree_root: str
    role_id: str
    system_prompt: str
    provider: dict[str, Any]
    model: str
    max_tokens: int
    limits: dict[str, Any]
    port_base: int
    port_stride: int = 100  # this worker owns [port_base, port_base + port_stride)
    setup: str | None = None
    context_limit: int | None = None
    escalation_model: str = ""  # for attempts the coordinator escalates
    escalation_context_limit: int | None = None
    ranking_model: str = ""  # the cheap tier, for ranking skills
    workspace: str = ""  # where a workspace skills/ folder may override shipped skills
    test_command: str | None = None
    role_skills: list[str] = field(default_factory=list)
    role_capabilities: list[str] = field(default_factory=list)
    record: bool = False
    env: dict[str, str] = field(default_factory=dict)
    sandbox: dict[str, Any] = field(default_factory=dict)  # a sandbox.Policy, as a dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        self.toolbox: Toolbox | None = None
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
        self.permits = PermitClient(worker_id, permits) if permits is not None else None
        self.provider = self._provider()
        self.skills = load_registry(Path(config.workspace) if config.workspace else None)

    def _provider(self) -> Provider | None:
        """The model provider, wrapped: recorded if asked, and metered when calls cost
        money (every call then passes the run's one limiter and one ledger)."""
        options = self.config.provider
        if options["name"] == "command":
            return None
        key = self.keys.get(KEY_ENV.get(options["name"], ""))
        provider: Provider = make_provider(**options, **({"api_key": key} if key else {}))
        warm = getattr(provider, "warm", None)
        if warm is not None:  # the SDKs: their first-use work done now, not on a permit's clock
            warm()
        if self.config.record:
            part = self.store.dir / PARTS / f"{self.id}.jsonl"
            provider = RecordingProvider(provider, part)
        if options["name"] == "scripted":
            return provider
        if self.permits is None:
            raise PdError("a worker making paid model calls needs a permit pipe")
        return MeteredProvider(provider, self.permits, estimate, self._stop_requested)

    def _stop_requested(self) -> bool:
        return self.stopping.is_set() or (
            self.current is not None and self.current in (self.abort_task, self.handoff_task)
        )

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
                if self.toolbox is not None:
                    self.toolbox.abort()
            elif isinstance(message, Shutdown):
                self.stopping.set()
                if self.toolbox is not None:
                    self.toolbox.abort()
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
        stamp = time.strftime("%H:%M:%S")
        with open(self.log_file, "a") as handle:
            handle.write(f"{stamp} [{self.id}] [{task_id}] {text}\n")

    def serve(self) -> None:
        while True:
            message = self.inbox.get()
            if message is None or self.stopping.is_set():
                return
            if isinstance(message, Assign):
                self.channel.send(self.attempt(message))

    def attempt(self, assign: Assign) -> Message:
        """One attempt of one task, from a fresh branch to a commit, never raising."""
        self.abort_task, self.handoff_task, self.current = None, None, assign.task_id
        self.channel.send(
            TaskStarted(worker_id=self.id, task_id=assign.task_id, attempt=assign.attempt)
        )
        self.log(assign.task_id, f"attempt {assign.attempt} starts on {assign.branch}")
        transcript = self.store.transcript_path(
            assign.task_id,
            assign.attempt if assign.kind == "task" else f"{assign.kind}-{assign.attempt}",
        )
        try:
            with open(transcript, "a") as record_file:
                return self._run(assign, record_file)
        except InfraError as exc:
            self.log(assign.task_id, f"attempt {assign.attempt} hit an infrastructure error: {exc}")
            return TaskFailed(
                worker_id=self.id,
                task_id=assign.task_id,
                attempt=assign.attempt,
                reason=str(exc),
                infrastructure=True,
            )
        except PdError as exc:
            reason = str(exc)
        except Exception as exc:  # the attempt fails, the worker lives on
            reason = f"internal error: {exc!r}"
            self.log(assign.task_id, traceback.format_exc())
        finally:
            self.toolbox = None
        self.log(assign.task_id, f"attempt {assign.attempt} failed: {reason}")
        return TaskFailed(
            worker_id=self.id, task_id=assign.task_id, attempt=assign.attempt, reason=reason
        )

    def _run(self, assign: Assign, record_file: Any) -> Message:
        if assign.kind == "plan":
            return self._plan(assign, record_file)
        if assign.kind == "review":
            return self._review(assign, record_file)
        if assign.kind != "task":
            raise PdError(f"this worker cannot run {assign.kind!r} attempts")
        base = assign.start_from or assign.target_head
        path = self._prepare(base, assign.branch)

        note = RunningNote(self.store.handoff_path(assign.task_id, assign.attempt))

        def record(entry: dict[str, Any]) -> None:
            _write_record(record_file, entry)
            note.update(entry, self.toolbox)

        on_line = self._progress(assign.task_id)
        should_stop = self._stop_requested

        if self.config.provider["name"] == "command":
            result = self._command_attempt(assign, path, record, on_line, should_stop)
        else:
            result = self._model_attempt(assign, path, record, on_line, should_stop)
        skills = result.skill_use()
        if not result.finished and self.handoff_task == assign.task_id:
            return self._hand_off(assign, path, result, skills)
        if not result.finished:
            self.log(assign.task_id, f"ended without finish: {result.reason}")
            return TaskFailed(
                worker_id=self.id,
                task_id=assign.task_id,
                attempt=assign.attempt,
                reason=result.reason,
                handoff=result.handoff,
                skills=skills,
            )
        with _infrastructure("committing the attempt's work"):
            commit, changed = commit_work(
                path,
                assign,
                result.summary,
                self.id,
                self.config.role_id,
                [*self.worktrees.setup_files(path), *AGENT_ARTIFACTS],
            )
        if not changed:  # not work to merge, unless the target already holds it
            holder, problem = holder_of_no_change(path, assign.target_head, result.final)
            if holder is None:
                self.log(assign.task_id, f"attempt {assign.attempt} failed: {problem}")
                return TaskFailed(
                    worker_id=self.id,
                    task_id=assign.task_id,
                    attempt=assign.attempt,
                    reason=problem,
                    skills=skills,
                )
            commit = holder
        self.log(assign.task_id, f"done at {commit[:10]}: {len(changed)} files changed")
        return TaskDone(
            worker_id=self.id,
            task_id=assign.task_id,
            attempt=assign.attempt,
            branch=assign.branch,
            commit=commit,
            summary=result.summary,
            changed_files=changed,
            skills=skills,
            already_merged=not changed,
        )

    def _prepare(self, base: str, branch: str | None) -> Path:
        """This worker's worktree at ``base``; a git or disk failure is pd's, not the
        agent's (the setup command failing is the project's, and stays a failure)."""
        with _infrastructure("preparing the worktree"):
            return self.worktrees.prepare(self.id, base=base, branch=branch)

    def _progress(self, task_id: str, prefix: str = "") -> Callable[[str], None]:
        """What a tool call prints: a line of the worker log and a live progress line."""

        def on_line(line: str) -> None:
            self.log(task_id, prefix + line)
            self.channel.send(Progress(worker_id=self.id, task_id=task_id, text=line))

        return on_line

    def _plan(self, assign: Assign, record_file: Any) -> Message:
        """A planning attempt: read the repository at the target head, submit a plan."""
        if self.provider is None:
            raise PdError("planning needs a model provider (scripted, anthropic or openai)")
        path = self._prepare(assign.target_head, assign.branch)
        limits = self.config.limits
        toolbox = planner_toolbox(
            path, assign.payload, self.env, limits["command_timeout"], limits["output_cap"]
        )
        toolbox.sandbox = Sandbox(self.policy, path, assign.branch)
        self.toolbox = toolbox

        on_line = self._progress(assign.task_id)
        planned = run_planner(
            self.provider,
            toolbox,
            assign.payload,
            system=self.config.system_prompt,
            model=self.config.model,
            max_tokens=self.config.max_tokens,
            max_turns=limits["max_turns"],
            attempt=assign.attempt,
            feedback=assign.feedback,
            record=lambda entry: _write_record(record_file, entry),
            on_tool=on_line,
            should_stop=self._stop_requested,
            context_limit=self.config.context_limit,
        )
        self.log(assign.task_id, f"plan accepted: {len(planned.tasks)} tasks")
        return PlanDone(
            worker_id=self.id,
            task_id=assign.task_id,
            attempt=assign.attempt,
            tasks=planned.tasks,
            summary=planned.summary,
            skills=planned.agent.skill_use(),
        )

    def _review(self, assign: Assign, record_file: Any) -> Message:
        """Judge another task's commit, checked out detached; nothing here is committed."""
        if self.provider is None:
            raise PdError("a review needs pd's own agent loop; the command provider cannot")
        payload = assign.payload
        path = self._prepare(payload["commit"], None)
        stat, diff = review_diff(path, payload["base"], payload["commit"])
        self.toolbox = review_toolbox(
            path,
            payload.get("skills", []),
            payload.get("test_command"),
            self.env,
            self.config.limits,
        )
        self.toolbox.sandbox = Sandbox(self.policy, path)

        def record(entry: dict[str, Any]) -> None:
            record_file.write(json.dumps(entry, default=str) + "\n")
            record_file.flush()

        on_line = self._progress(assign.task_id, "review: ")
        result = run_agent(
            self.provider,
            self.toolbox,
            system=self.config.system_prompt,
            prompt=review_prompt(assign.task_id, payload, stat, diff),
            model=self.config.model,
            max_tokens=self.config.max_tokens,
            max_turns=self.config.limits["max_turns"],
            task_id=f"{assign.task_id}:review",  # its own cassette entry and spend line
            attempt=assign.attempt,
            record=record,
            on_tool=on_line,
            should_stop=self._stop_requested,
            context_limit=self.config.context_limit,
        )
        verdict = (result.final or {}).get("verdict") or f"no verdict ({result.reason})"
        self.log(assign.task_id, f"review round {assign.attempt}: {verdict}")
        return verdict_message(self.id, assign.task_id, assign.attempt, result)

    def _model_attempt(
        self, assign: Assign, path: Path, record: Any, on_line: Any, should_stop: Any
    ) -> AgentResult:
        """pd's own agent loop: the model asks, pd's confined tools act."""
        limits = self.config.limits
        model, context_limit = self.config.model, self.config.context_limit
        if assign.escalate and self.config.escalation_model:
            model, context_limit = (
                self.config.escalation_model,
                self.config.escalation_context_limit,
            )
            self.log(assign.task_id, f"escalated to {model}")
        chosen = self._choose_skills(assign, model, record)
        self.toolbox = SkillToolbox(
            path,
            chosen,
            catalog=self.skills,
            test_command=self.config.test_command,
            env=self.env,
            command_timeout=limits["command_timeout"],
            output_cap=limits["output_cap"],
        )
        self.toolbox.sandbox = Sandbox(self.policy, path, assign.branch)
        return run_agent(
            self.provider,
            self.toolbox,
            system=self.config.system_prompt,
            prompt=task_prompt(assign, context_block(path, assign.context_files)),
            model=model,
            max_tokens=self.config.max_tokens,
            max_turns=limits["max_turns"],
            task_id=assign.task_id,
            attempt=assign.attempt,
            record=record,
            on_tool=on_line,
            should_stop=should_stop,
            context_limit=context_limit,
            on_text=LiveLines(on_line),
        )

    def _hand_off(
        self, assign: Assign, path: Path, result: AgentResult, skills: dict[str, list[str]]
    ) -> Message:
        """``pd handoff``: commit the work in progress on the task branch, brief the next
        attempt, which starts from that commit."""
        commit, changed = commit_work(
            path,
            assign,
            "work in progress, handed off",
            self.id,
            self.config.role_id,
            [*self.worktrees.setup_files(path), *AGENT_ARTIFACTS],
        )
        where = f"committed on the task branch at {commit[:10]} ({len(changed)} files)"
        note = result.handoff.replace("stopped (aborted)", "was handed off on request")
        self.log(assign.task_id, f"handed off: work in progress {where}")
        return TaskFailed(
            worker_id=self.id,
            task_id=assign.task_id,
            attempt=assign.attempt,
            reason="handed off on request",
            handoff=f"{note}\nIts work in progress is {where}; you start from there.",
            skills=skills,
            handed_off=True,
            start_from=commit,
        )

    def _choose_skills(self, assign: Assign, model: str, record: Any) -> list[Skill]:
        """3-8 skills for this task; a ranking call to the cheap model when many fit.
        A ranking that fails (not the budget) leaves the filter's order."""
        config = self.config
        rank = None
        if self.provider is not None and config.provider["name"] != "scripted":
            rank = model_ranker(
                self.provider,
                config.ranking_model or model,
                task_id=assign.task_id,
                attempt=assign.attempt,
                record=record,
            )
        text = "\n".join([assign.title, assign.description, *assign.files])
        try:
            selection = choose_skills(
                self.skills, config.role_skills, config.role_capabilities, text, rank
            )
        except ProviderError as exc:
            self.log(assign.task_id, f"skill ranking failed, using the filter's order: {exc}")
            selection = choose_skills(
                self.skills, config.role_skills, config.role_capabilities, text
            )
        record({"kind": "skills", **selection.to_dict()})
        return selection.skills

    def _command_attempt(
        self, assign: Assign, path: Path, record: Any, on_line: Any, should_stop: Any
    ) -> AgentResult:
        """A coding-agent CLI is the agent: it gets the prompt and only its own API key."""
        options = self.config.provider
        keys = options.get("pass_env") or DEFAULT_KEYS.get(options["agent"], [])
        given = {**{k: os.environ[k] for k in keys if k in os.environ}, **self.keys}
        env = {**self.env, **{k: given[k] for k in keys if k in given}}
        context = context_block(path, assign.context_files)
        prompt = f"{self.config.system_prompt}\n\n{task_prompt(assign, context)}"
        ran = run_command_agent(
            options["agent"],
            prompt,
            cwd=path,
            env=env,
            timeout=self.config.limits["attempt_timeout"],
            model=self.config.model or None,
            executable=options.get("executable"),
            extra_args=options.get("args") or [],
            should_stop=should_stop,
            on_line=on_line,
            record=record,
            sandbox=Sandbox(self.policy, path, assign.branch),
            keep=keys,
        )
        self.channel.send(
            UsageReport(
                worker_id=self.id,
                task_id=assign.task_id,
                model=self.config.model or options["agent"],
                usage=ran.usage.to_dict(),
                cost_usd=None if ran.cost_usd is None else str(ran.cost_usd),
            )
        )
        handoff = f"The previous run of {options['agent']} ended: {ran.reason}\n{ran.output_tail}"
        return AgentResult(
            ran.finished,
            ran.summary,
            ran.turns,
            ran.usage,
            reason=ran.reason,
            handoff="" if ran.finished else handoff.strip(),
        )


@contextmanager
def _infrastructure(doing: str) -> Iterator[None]:
    """Turn a git or OS failure while ``doing`` into an InfraError."""
    try:
        yield
    except (GitError, OSError) as exc:
        raise InfraError(f"{doing} failed: {exc}") from exc


def _write_record(record_file: Any, entry: dict[str, Any]) -> None:
    record_file.write(json.dumps(entry, default=str) + "\n")
    record_file.flush()


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
        worker = Worker(worker_id, WorkerConfig(**config), channel, side, keys)
    except Exception as exc:
        channel.send(Ready(worker_id=worker_id, pid=os.getpid(), error=f"{exc}"))
        return
    channel.send(Ready(worker_id=worker_id, pid=os.getpid()))
    interval = float(worker.config.limits.get("heartbeat_interval", 1.0))
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
