"""The worker's job runners: a job in, one answer out. Each prepares the worktree (pd's
part: a failure there is infrastructure), asks the agent, and turns what it did into a
message: a commit for a task, a plan, a verdict, or a handoff."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from orchestrator.agent.attempt import RunningNote, commit_work, holder_of_no_change
from orchestrator.agent.loop import AgentResult
from orchestrator.agent.protocol import Workspace
from orchestrator.agent.reviewer import verdict_message
from orchestrator.errors import GitError, InfraError
from orchestrator.providers.base import Usage
from orchestrator.system.sandbox import Sandbox
from orchestrator.wire.messages import (
    HandedOff,
    Job,
    Message,
    PlanDone,
    PlanJob,
    Progress,
    ReviewJob,
    TaskDone,
    TaskFailed,
    TaskJob,
    UsageReport,
)

if TYPE_CHECKING:
    from decimal import Decimal

    from orchestrator.engine.worker import Worker

# What coding-agent CLIs leave in a worktree about themselves: never part of the work.
AGENT_ARTIFACTS = (".aider.chat.history.md", ".aider.input.history", ".aider.tags.cache.v3")


def transcript_name(job: Job) -> int | str:
    """A task's attempts are numbered; plan and review rounds say what they are."""
    if isinstance(job, TaskJob):
        return job.attempt
    return f"{'plan' if isinstance(job, PlanJob) else 'review'}-{job.attempt}"


def starts_on(job: Job) -> str:
    return job.commit[:10] if isinstance(job, ReviewJob) else job.branch


class JobRunner:
    """Runs a worker's jobs with its agent, worktrees and channel."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def run(self, job: Job, record_file: IO[str]) -> Message:
        if isinstance(job, PlanJob):
            return self.plan(job, record_file)
        if isinstance(job, ReviewJob):
            return self.review(job, record_file)
        return self.task(job, record_file)

    def task(self, job: TaskJob, record_file: IO[str]) -> Message:
        """An attempt: the agent changes the worktree, pd commits what it left."""
        worker = self.worker
        path = self._prepare(job.start_from or job.target_head, job.branch)
        note = RunningNote(worker.store.handoff_path(job.task_id, job.attempt))
        workspace = self._workspace(
            job, path, record_file, Sandbox(worker.policy, path, job.branch)
        )

        def record(entry: dict[str, Any]) -> None:
            _write_record(record_file, entry)
            note.update(entry, workspace.toolbox)

        workspace.record = record
        result = worker.agent.attempt(job, workspace)
        skills = result.skill_use()
        if not result.finished and worker.handoff_task == job.task_id:
            return self._hand_off(job, path, result, skills)
        if not result.finished:
            worker.log(job.task_id, f"ended without finish: {result.reason}")
            return TaskFailed(
                worker_id=worker.id,
                task_id=job.task_id,
                attempt=job.attempt,
                reason=result.reason,
                handoff=result.handoff,
                skills=skills,
            )
        with infrastructure("committing the attempt's work"):
            commit, changed = self._commit(job, path, result.summary)
        if not changed:  # not work to merge, unless the target already holds it
            holder, problem = holder_of_no_change(path, job.target_head, result.final)
            if holder is None:
                worker.log(job.task_id, f"attempt {job.attempt} failed: {problem}")
                return TaskFailed(
                    worker_id=worker.id,
                    task_id=job.task_id,
                    attempt=job.attempt,
                    reason=problem,
                    skills=skills,
                )
            commit = holder
        worker.log(job.task_id, f"done at {commit[:10]}: {len(changed)} files changed")
        return TaskDone(
            worker_id=worker.id,
            task_id=job.task_id,
            attempt=job.attempt,
            branch=job.branch,
            commit=commit,
            summary=result.summary,
            changed_files=changed,
            skills=skills,
            already_merged=not changed,
        )

    def plan(self, job: PlanJob, record_file: IO[str]) -> Message:
        """A planning attempt: read the repository at the target head, submit a plan."""
        worker = self.worker
        path = self._prepare(job.target_head, job.branch)
        sandbox = Sandbox(worker.policy, path, job.branch)
        planned = worker.agent.plan(job, self._workspace(job, path, record_file, sandbox))
        worker.log(job.task_id, f"plan accepted: {len(planned.tasks)} tasks")
        return PlanDone(
            worker_id=worker.id,
            task_id=job.task_id,
            attempt=job.attempt,
            tasks=planned.tasks,
            summary=planned.summary,
            skills=planned.agent.skill_use(),
        )

    def review(self, job: ReviewJob, record_file: IO[str]) -> Message:
        """Judge another task's commit, checked out detached; nothing here is committed."""
        worker = self.worker
        path = self._prepare(job.commit, None)
        workspace = self._workspace(job, path, record_file, Sandbox(worker.policy, path))
        workspace.on_line = self._progress(job.task_id, "review: ")
        result = worker.agent.review(job, workspace)
        verdict = (result.final or {}).get("verdict") or f"no verdict ({result.reason})"
        worker.log(job.task_id, f"review round {job.attempt}: {verdict}")
        return verdict_message(worker.id, job.task_id, job.attempt, result)

    # ---- around the agent ------------------------------------------------------------

    def _workspace(self, job: Job, path: Path, record_file: IO[str], sandbox: Sandbox) -> Workspace:
        worker, task_id = self.worker, job.task_id

        def report_usage(model: str, usage: Usage, cost_usd: Decimal | None) -> None:
            report = UsageReport(
                worker_id=worker.id,
                task_id=task_id,
                model=model,
                usage=usage.to_dict(),
                cost_usd=None if cost_usd is None else str(cost_usd),
            )
            worker.channel.send(report)

        workspace = Workspace(
            path=path,
            env=worker.env,
            sandbox=sandbox,
            record=lambda entry: _write_record(record_file, entry),
            on_line=self._progress(task_id),
            should_stop=worker.stop_requested,
            log=lambda text: worker.log(task_id, text),
            report_usage=report_usage,
        )
        worker.workspace = workspace
        return workspace

    def _prepare(self, base: str, branch: str | None) -> Path:
        """This worker's worktree at ``base``; a git or disk failure is pd's, not the
        agent's (the setup command failing is the project's, and stays a failure)."""
        with infrastructure("preparing the worktree"):
            return self.worker.worktrees.prepare(self.worker.id, base=base, branch=branch)

    def _progress(self, task_id: str, prefix: str = "") -> Callable[[str], None]:
        """What a tool call prints: a line of the worker log and a live progress line."""
        worker = self.worker

        def on_line(line: str) -> None:
            worker.log(task_id, prefix + line)
            worker.channel.send(Progress(worker_id=worker.id, task_id=task_id, text=line))

        return on_line

    def _commit(self, job: TaskJob, path: Path, summary: str) -> tuple[str, list[str]]:
        worker = self.worker
        exclude = [*worker.worktrees.setup_files(path), *AGENT_ARTIFACTS]
        return commit_work(path, job, summary, worker.id, worker.config.role_id, exclude)

    def _hand_off(
        self, job: TaskJob, path: Path, result: AgentResult, skills: dict[str, list[str]]
    ) -> Message:
        """``pd handoff``: commit the work in progress on the task branch, brief the next
        attempt, which starts from that commit."""
        commit, changed = self._commit(job, path, "work in progress, handed off")
        where = f"committed on the task branch at {commit[:10]} ({len(changed)} files)"
        note = result.handoff.replace("stopped (aborted)", "was handed off on request")
        self.worker.log(job.task_id, f"handed off: work in progress {where}")
        return HandedOff(
            worker_id=self.worker.id,
            task_id=job.task_id,
            attempt=job.attempt,
            start_from=commit,
            handoff=f"{note}\nIts work in progress is {where}; you start from there.",
            skills=skills,
        )


@contextmanager
def infrastructure(doing: str) -> Iterator[None]:
    """Turn a git or OS failure while ``doing`` into an InfraError."""
    try:
        yield
    except (GitError, OSError) as exc:
        raise InfraError(f"{doing} failed: {exc}") from exc


def _write_record(record_file: IO[str], entry: dict[str, Any]) -> None:
    record_file.write(json.dumps(entry, default=str) + "\n")
    record_file.flush()
