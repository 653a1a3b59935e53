"""The CLI agent: a coding-agent CLI (Claude Code, Codex, Aider, Gemini CLI) does a task
attempt in the worktree. It brings its own loop and tools, so pd can neither plan with
it (``submit_plan`` is pd's tool) nor review with it (nothing may be left committed):
those jobs it refuses, saying what to change."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.agent.attempt import context_block, task_prompt
from orchestrator.agent.external.runner import run_command_agent
from orchestrator.agent.loop import AgentResult
from orchestrator.agent.protocol import PlanOutcome, Workspace
from orchestrator.errors import PdError
from orchestrator.wire.messages import PlanJob, ReviewJob, TaskJob


@dataclass
class CommandAgent:
    """One CLI, by adapter name; ``secrets`` are the API keys it may see (by variable
    name, from ``keys``), the only ones put in its environment."""

    agent: str
    system_prompt: str
    timeout: float  # seconds for one run of the CLI
    model: str = ""  # "" : the CLI's own default
    executable: str | list[str] | None = None
    args: list[str] = field(default_factory=list)
    keys: Sequence[str] = ()
    secrets: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.agent} CLI"

    def attempt(self, job: TaskJob, workspace: Workspace) -> AgentResult:
        """The CLI gets the role's prompt and the task, and only its own API key."""
        context = context_block(workspace.path, job.context_files)
        prompt = f"{self.system_prompt}\n\n{task_prompt(job, context)}"
        env = {**workspace.env, **{k: self.secrets[k] for k in self.keys if k in self.secrets}}
        ran = run_command_agent(
            self.agent,
            prompt,
            cwd=workspace.path,
            env=env,
            timeout=self.timeout,
            model=self.model or None,
            executable=self.executable,
            extra_args=self.args,
            should_stop=workspace.should_stop,
            on_line=workspace.on_line,
            record=workspace.record,
            sandbox=workspace.sandbox,
            keep=self.keys,
        )
        workspace.report_usage(self.model or self.agent, ran.usage, ran.cost_usd)
        handoff = f"The previous run of {self.agent} ended: {ran.reason}\n{ran.output_tail}"
        return AgentResult(
            ran.finished,
            ran.summary,
            ran.turns,
            ran.usage,
            reason=ran.reason,
            handoff="" if ran.finished else handoff.strip(),
        )

    def plan(self, job: PlanJob, workspace: Workspace) -> PlanOutcome:
        raise PdError(
            f"the {self.name} agent cannot plan: planning needs pd's own agent loop and its "
            "submit_plan tool. Give the mission's provider as scripted, anthropic or "
            "openai, or list the tasks in the mission instead of a goal"
        )

    def review(self, job: ReviewJob, workspace: Workspace) -> AgentResult:
        raise PdError(
            f"the {self.name} agent cannot review: a review needs pd's own agent loop and "
            "its submit_review tool. Use provider scripted, anthropic or openai, or set "
            "review off in the mission"
        )
