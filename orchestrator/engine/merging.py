"""The coordinator's side of the merge ratchet: one merge at a time to the merger process,
and what its results mean for the graph, the target head and the session log.

Mixed into ``Coordinator``. A rejected merge (conflict or failing gate) becomes a failed
attempt with the conflict paths or the gate log's tail as feedback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.engine.configs import MERGER
from orchestrator.record import events as ev
from orchestrator.system.gitutil import is_ancestor, rev_parse
from orchestrator.tasks.taskgraph import TaskState
from orchestrator.wire.messages import MergeResult, Ready

# How long an aborted merger may take to stop: killing a gate is quick, and a ref move
# it had begun finishes (update-ref plus the checkout sync) before it leaves.
MERGER_STOP_WAIT = 30.0

if TYPE_CHECKING:
    from orchestrator.engine.coordinator import Coordinator
    from orchestrator.engine.pool import PoolEvent


class MergeSteps:
    """Coordinator methods for the merge queue and the merger."""

    def _next_merge(self: Coordinator) -> None:
        request = self.merges.take()
        if request is not None:
            # Durable before the merger hears of it: a move the merger makes and cannot
            # report (the coordinator died meanwhile) is then still in the record.
            self.emit(ev.MergeStarted(task=request.task_id, commit=request.commit))
            self.pool.send(MERGER, request)

    def _handle_merger(self: Coordinator, event: PoolEvent) -> None:
        if event.died:
            lost = self.merges.merger_lost()
            self.emit(ev.MergerCrashed(exitcode=event.exitcode, task=lost))
            if not self.abort_reason:
                self.pool.restart(MERGER)
            return
        message = event.message
        if isinstance(message, Ready):
            self.merges.merger_ready = not message.error
            if message.error:
                self.emit(ev.MergerFailedToStart(error=message.error))
                self.abort_reason = f"merger failed to start: {message.error}"
            self.pool.workers[MERGER].ready = True
        elif isinstance(message, MergeResult):
            self._merge_result(message)
        self._next_merge()

    def _stop_merger(self: Coordinator) -> None:
        """Abort: stop the running gate before it can move the target branch. A verdict
        the merger sent first, or a move it had begun (a ref move always finishes with
        its checkout sync), is recorded: the run's record agrees with the target."""
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
            if isinstance(event.message, MergeResult):
                self._merge_result(event.message)
        current = self.merges.current
        head = rev_parse(self.plan.repo, f"refs/heads/{self.plan.target_branch}")
        moved = current is not None and head and head != self.head
        if moved and is_ancestor(self.plan.repo, current.commit, head):  # landed untold
            self._merge_result(MergeResult(current.task_id, current.attempt, True, head=head))

    def _merge_result(self: Coordinator, result: MergeResult) -> None:
        self.merges.finished()
        task = self.graph.get(result.task_id)
        if result.infrastructure:
            self._infra_failed(task.id, result.reason, merger=True)
            return
        if result.already_merged and task.state is TaskState.MERGING:
            self._already_merged(task.id, result.attempt, result.head)
            return
        if result.merged:
            self.head = result.head
            merged = ev.TaskMerged(
                task=result.task_id,
                attempt=result.attempt,
                head=result.head,
                seconds=round(result.seconds, 3),
            )
            # Aborted while the merger had it: it landed all the same, and says so.
            self.transition(merged)
            self._log_session(task)
            return
        # A conflict's reason already lists its paths (merger._merge): say them once.
        detail = result.log_tail
        self.emit(
            ev.TaskRejected(
                task=result.task_id,
                attempt=result.attempt,
                reason=result.reason,
                conflicts=result.conflicts,
                log_tail=result.log_tail,
            )
        )
        self._attempt_failed(result.task_id, f"{result.reason}\n{detail}".strip())

    def _already_merged(self: Coordinator, task_id: str, attempt: int, commit: str) -> None:
        """The task's change is in the target already (at ``commit``): recorded as its
        own outcome, never as a merge, and dependents may start."""
        event = ev.TaskAlreadyMerged(task=task_id, attempt=attempt, commit=commit)
        self.transition(event)
        self._log_session(self.graph.get(task_id))

    def _log_session(self: Coordinator, task: Any) -> None:
        summary = " ".join((task.summary or "").split())[:300]
        line = f"{task.id}: {task.title}" + (f" — {summary}" if summary else "")
        self.session.append(line)
        with open(self.store.session_log_path, "a") as handle:
            handle.write(line + "\n")
