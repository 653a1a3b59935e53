"""The seam between a worker and whatever does the work: the ``Agent`` protocol.

A worker prepares the worktree, hands the agent a job and a ``Workspace`` (where to
work, how to report), and turns what comes back into a message. Which agent it holds
(pd's own loop over a model, or a coding-agent CLI) is decided once, when the worker
boots; a job an agent cannot do is the agent's answer (a ``PdError`` saying so), never
a branch in the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from orchestrator.agent.loop import AgentResult
from orchestrator.providers.base import Usage
from orchestrator.system.sandbox import Sandbox
from orchestrator.team.tools import Toolbox
from orchestrator.wire.messages import PlanJob, ReviewJob, TaskJob

Record = Callable[[dict[str, Any]], None]


def _no_usage(model: str, usage: Usage, cost_usd: Decimal | None) -> None:
    return None


@dataclass
class Workspace:
    """One job's place and channels: the prepared worktree, the environment and sandbox
    its commands get, and where its records, progress lines and usage go.

    The agent sets ``toolbox`` when it builds one, so the worker can abort its running
    command and read the files it touched (for the handoff note)."""

    path: Path
    env: Mapping[str, str]
    sandbox: Sandbox
    record: Record = lambda entry: None
    on_line: Callable[[str], None] = lambda line: None
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = lambda line: None
    # Usage of calls pd did not meter itself (a CLI agent calls its model on its own).
    report_usage: Callable[[str, Usage, Decimal | None], None] = _no_usage
    toolbox: Toolbox | None = None


@dataclass
class PlanOutcome:
    """An accepted plan: ``tasks`` as mission task dicts (defaults left out)."""

    tasks: list[dict[str, Any]]
    summary: str
    agent: AgentResult


class Agent(Protocol):
    """What runs a worker's jobs. Each method runs in the prepared ``workspace`` and
    returns how the agent ended; it raises ``PdError`` for a job it cannot do (with
    what to change), ``ProviderError`` / ``AttemptEnded`` as the loop does."""

    name: str  # for logs and refusals: "anthropic", "claude CLI", ...

    def attempt(self, job: TaskJob, workspace: Workspace) -> AgentResult:
        """Make the change the task asks for in ``workspace.path`` (pd commits it)."""
        ...

    def plan(self, job: PlanJob, workspace: Workspace) -> PlanOutcome:
        """Read the repository and return an accepted plan for the goal."""
        ...

    def review(self, job: ReviewJob, workspace: Workspace) -> AgentResult:
        """Judge the commit checked out in ``workspace.path``; ``final`` holds the verdict."""
        ...
