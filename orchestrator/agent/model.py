"""The model-driven agent: pd's own loop over a provider (metered and recorded as the
worker wrapped it), with pd's confined tools. It can do every kind of job."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.agent.attempt import LiveLines, context_block, task_prompt
from orchestrator.agent.loop import AgentResult, run_agent
from orchestrator.agent.protocol import PlanOutcome, Workspace
from orchestrator.agent.reviewer import review_diff, review_prompt, review_toolbox
from orchestrator.errors import PdError, ProviderError
from orchestrator.providers.base import Provider
from orchestrator.team.skills import (
    Skill,
    SkillRegistry,
    SkillToolbox,
    choose_skills,
    load_registry,
    model_ranker,
)
from orchestrator.wire.messages import PlanJob, ReviewJob, TaskJob


@dataclass
class ModelSettings:
    """How the loop runs for this worker's role: its prompt, its models, its limits."""

    system_prompt: str
    model: str
    max_tokens: int
    max_turns: int
    command_timeout: float
    output_cap: int
    context_limit: int | None = None
    escalation_model: str = ""  # for attempts the coordinator escalates
    escalation_context_limit: int | None = None
    # The cheap tier that ranks skills ("" : the attempt's model); None: no ranking call
    # (a scripted cassette holds only the attempts' calls).
    ranking_model: str | None = ""
    test_command: str | None = None
    role_skills: list[str] = field(default_factory=list)
    role_capabilities: list[str] = field(default_factory=list)
    workspace: str = ""  # where a workspace skills/ folder may override shipped skills


# Planning lives a layer up (orchestrator.planning), so the worker hands its planner in.
Planner = Callable[[Provider, PlanJob, Workspace, ModelSettings], PlanOutcome]


class ModelAgent:
    """pd's agent loop over ``provider``."""

    def __init__(
        self,
        provider: Provider,
        settings: ModelSettings,
        planner: Planner | None = None,
        name: str = "model",
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.planner = planner
        self.name = name
        self.skills: SkillRegistry = load_registry(
            Path(settings.workspace) if settings.workspace else None
        )

    def attempt(self, job: TaskJob, workspace: Workspace) -> AgentResult:
        """The model asks, pd's confined tools act; an escalated job gets the top tier."""
        settings = self.settings
        model, context_limit = settings.model, settings.context_limit
        if job.escalate and settings.escalation_model:
            model, context_limit = settings.escalation_model, settings.escalation_context_limit
            workspace.log(f"escalated to {model}")
        toolbox = SkillToolbox(
            workspace.path,
            self._choose_skills(job, model, workspace),
            catalog=self.skills,
            test_command=settings.test_command,
            env=workspace.env,
            command_timeout=settings.command_timeout,
            output_cap=settings.output_cap,
        )
        toolbox.sandbox = workspace.sandbox
        workspace.toolbox = toolbox
        return run_agent(
            self.provider,
            toolbox,
            system=settings.system_prompt,
            prompt=task_prompt(job, context_block(workspace.path, job.context_files)),
            model=model,
            max_tokens=settings.max_tokens,
            max_turns=settings.max_turns,
            task_id=job.task_id,
            attempt=job.attempt,
            record=workspace.record,
            on_tool=workspace.on_line,
            should_stop=workspace.should_stop,
            context_limit=context_limit,
            on_text=LiveLines(workspace.on_line),
        )

    def plan(self, job: PlanJob, workspace: Workspace) -> PlanOutcome:
        if self.planner is None:
            raise PdError(
                f"the {self.name} agent was built without a planner: a worker that plans "
                "must be given orchestrator.planning's planner (this is a bug in pd)"
            )
        return self.planner(self.provider, job, workspace, self.settings)

    def review(self, job: ReviewJob, workspace: Workspace) -> AgentResult:
        """Read the diff, look around with read-only skills, end with ``submit_review``."""
        settings = self.settings
        stat, diff = review_diff(workspace.path, job.base, job.commit)
        toolbox = review_toolbox(
            workspace.path,
            job.skills,
            job.test_command,
            workspace.env,
            settings.command_timeout,
            settings.output_cap,
        )
        toolbox.sandbox = workspace.sandbox
        workspace.toolbox = toolbox
        return run_agent(
            self.provider,
            toolbox,
            system=settings.system_prompt,
            prompt=review_prompt(job, stat, diff),
            model=settings.model,
            max_tokens=settings.max_tokens,
            max_turns=settings.max_turns,
            task_id=f"{job.task_id}:review",  # its own cassette entry and spend line
            attempt=job.attempt,
            record=workspace.record,
            on_tool=workspace.on_line,
            should_stop=workspace.should_stop,
            context_limit=settings.context_limit,
        )

    def _choose_skills(self, job: TaskJob, model: str, workspace: Workspace) -> list[Skill]:
        """3-8 skills for this task; a ranking call to the cheap model when many fit.
        A ranking that fails (not the budget) leaves the filter's order."""
        settings = self.settings
        rank = None
        if settings.ranking_model is not None:
            rank = model_ranker(
                self.provider,
                settings.ranking_model or model,
                task_id=job.task_id,
                attempt=job.attempt,
                record=workspace.record,
            )
        text = "\n".join([job.title, job.description, *job.files])
        roles, capabilities = settings.role_skills, settings.role_capabilities
        try:
            selection = choose_skills(self.skills, roles, capabilities, text, rank)
        except ProviderError as exc:
            workspace.log(f"skill ranking failed, using the filter's order: {exc}")
            selection = choose_skills(self.skills, roles, capabilities, text)
        workspace.record({"kind": "skills", **selection.to_dict()})
        return selection.skills
