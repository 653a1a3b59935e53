"""The coordinator's side of the merge ratchet: one merge at a time to the merger process,
and what its results mean for the graph, the target head and the session log.

Mixed into ``Coordinator``. A rejected merge (conflict or failing gate) becomes a failed
attempt with the conflict paths or the gate log's tail as feedback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.configs import MERGER
from orchestrator.messages import MergeResult, Ready
from orchestrator.taskgraph import TaskState

if TYPE_CHECKING:
    from orchestrator.coordinator import Coordinator
    from orchestrator.pool import PoolEvent


class MergeSteps:
    """Coordinator methods for the merge queue and the merger."""

    def _next_merge(self: Coordinator) -> None:
        request = self.merges.take()
        if request is not None:
            # Informational (resume checks git itself): synced with the step's others.
            self.emit("merge_started", task=request.task_id, commit=request.commit, sync=False)
            self.pool.send(MERGER, request)

    def _handle_merger(self: Coordinator, event: PoolEvent) -> None:
        if event.died:
            lost = self.merges.merger_lost()
            self.emit("merger_crashed", exitcode=event.exitcode, task=lost)
            if not self.abort_reason:
                self.pool.restart(MERGER)
            return
        message = event.message
        if isinstance(message, Ready):
            self.merges.merger_ready = not message.error
            if message.error:
                self.emit("merger_failed_to_start", error=message.error)
                self.abort_reason = f"merger failed to start: {message.error}"
            self.pool.workers[MERGER].ready = True
        elif isinstance(message, MergeResult):
            self._merge_result(message)
        self._next_merge()

    def _merge_result(self: Coordinator, result: MergeResult) -> None:
        self.merges.finished()
        task = self.graph.get(result.task_id)
        if result.merged:
            self.head = result.head
            if task.state is TaskState.MERGING:
                self.graph.merged(result.task_id, result.head)
            else:  # aborted while the merger had it: it landed all the same; say so
                self.graph.restore(task.id, TaskState.MERGED, task.attempts, commit=result.head)
                self.graph.settle()
            self.emit(
                "task_merged",
                task=result.task_id,
                attempt=result.attempt,
                head=result.head,
                seconds=round(result.seconds, 3),
            )
            self._log_session(task)
            return
        # A conflict's reason already lists its paths (merger._merge): say them once.
        detail = result.log_tail
        self.emit(
            "task_rejected",
            task=result.task_id,
            attempt=result.attempt,
            reason=result.reason,
            conflicts=result.conflicts,
            log_tail=result.log_tail,
        )
        self._attempt_failed(result.task_id, f"{result.reason}\n{detail}".strip())

    def _log_session(self: Coordinator, task: Any) -> None:
        summary = " ".join((task.summary or "").split())[:300]
        line = f"{task.id}: {task.title}" + (f" — {summary}" if summary else "")
        self.session.append(line)
        with open(self.store.session_log_path, "a") as handle:
            handle.write(line + "\n")
