"""One tree of errors, so the CLI can turn any of them into one actionable line.

Catch sites are few on purpose: the worker loop, each task attempt, and the CLI.
"""

from __future__ import annotations


class PdError(Exception):
    """Base of every error pd raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class BadInput(PdError):
    """The user gave pd something it cannot use. Nothing was changed on disk or in git.

    The message names the file, the field and the fix, on one line.
    """

    exit_code = 2

    def __init__(self, where: str, problem: str, fix: str, field: str | None = None) -> None:
        self.where = where
        self.field = field
        self.problem = problem
        self.fix = fix
        location = f"{where}: {field}" if field else where
        super().__init__(f"{location}: {problem} (fix: {fix})")


class RunNotFound(BadInput):
    """A command named a run that the run store does not hold."""


class GitError(PdError):
    """A git command failed where pd expected it to succeed."""

    def __init__(self, command: list[str] | str, stderr: str, returncode: int = 1) -> None:
        self.command = command
        self.stderr = stderr
        self.returncode = returncode
        shown = command if isinstance(command, str) else " ".join(command)
        super().__init__(f"git failed ({returncode}): {shown}: {stderr.strip()[:500]}")


class InfraError(PdError):
    """pd's own machinery failed (git, the disk), not the agent: the attempt is retried,
    never counted against the task's attempts and never shown to the model."""


class ToolError(PdError):
    """An agent's tool call was refused or failed; the message goes back to the model."""


class ProviderError(PdError):
    """A model provider could not answer; the attempt fails with this reason."""


class AttemptEnded(PdError):
    """An agent attempt stopped before the agent called ``finish`` (turn limit, abort)."""

    def __init__(self, reason: str, handoff: str = "") -> None:
        self.reason = reason
        self.handoff = handoff
        super().__init__(reason)


class PlanRejected(AttemptEnded):
    """A planning attempt's plans were refused too often; ``reason`` has the last problem."""
