"""One planning attempt: the producer's agent over a read-only view of the repository.

A worker's model agent runs it for a ``PlanJob`` (``plan_job``), and ``pd plan`` runs it
in its own process: the same skills, the same ``submit_plan`` tool and the same checks either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.agent.loop import run_agent
from orchestrator.agent.model import ModelSettings
from orchestrator.agent.protocol import PlanOutcome, Workspace
from orchestrator.errors import AttemptEnded
from orchestrator.planning.taskplan import (
    PLAN_ID,
    TeamRole,
    parse_plan,
    plan_prompt,
    planner_ending,
)
from orchestrator.providers.base import Provider
from orchestrator.team.skills import SkillToolbox, load_registry
from orchestrator.wire.messages import PlanJob

PlanResult = PlanOutcome  # an accepted plan: tasks as mission task dicts, and the run


def planner_toolbox(
    root: Path,
    payload: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    command_timeout: float = 300,
    output_cap: int = 20_000,
) -> SkillToolbox:
    """The payload's read-only skills over ``root``, ending with ``submit_plan``."""
    registry = load_registry(Path(payload["workspace"]))
    skills = [registry.get(s) for s in payload["skills"] if s in registry]
    return SkillToolbox(
        root,
        skills,
        env=env,
        command_timeout=command_timeout,
        output_cap=output_cap,
        test_command=payload.get("gate") or None,  # what the gate runs, as workers get
        ending=planner_ending(payload),
    )


def run_planner(
    provider: Provider,
    toolbox: SkillToolbox,
    payload: Mapping[str, Any],
    *,
    system: str,
    model: str,
    max_tokens: int,
    max_turns: int,
    attempt: int = 1,
    feedback: Sequence[str] = (),
    record: Callable[[dict[str, Any]], None] = lambda e: None,
    on_tool: Callable[[str], None] = lambda s: None,
    should_stop: Callable[[], bool] = lambda: False,
    context_limit: int | None = None,
) -> PlanResult:
    """Run the agent until it submits a plan the check accepts. Raises ``AttemptEnded``
    (``PlanRejected`` after too many bad plans) or the provider's error otherwise."""
    result = run_agent(
        provider,
        toolbox,
        system=system,
        prompt=plan_prompt(payload, feedback),
        model=model,
        max_tokens=max_tokens,
        max_turns=max_turns,
        task_id=PLAN_ID,
        attempt=attempt,
        record=record,
        on_tool=on_tool,
        should_stop=should_stop,
        context_limit=context_limit,
    )
    if not result.finished or result.final is None:
        raise AttemptEnded(f"planning ended without a plan: {result.reason}", result.handoff)
    team = [TeamRole(**r) for r in payload["team"]]
    specs, _ = parse_plan(result.final.get("tasks"), team, int(payload.get("max_attempts", 3)))
    tasks = [s.model_dump(mode="json", exclude_defaults=True) for s in specs]
    return PlanResult(tasks, result.summary, result)


def plan_job(
    provider: Provider, job: PlanJob, workspace: Workspace, settings: ModelSettings
) -> PlanResult:
    """A worker's planning attempt (``ModelAgent``'s planner): the job's brief over the
    prepared worktree, with the worker's sandbox and limits."""
    brief = job.brief()
    toolbox = planner_toolbox(
        workspace.path, brief, workspace.env, settings.command_timeout, settings.output_cap
    )
    toolbox.sandbox = workspace.sandbox
    workspace.toolbox = toolbox
    return run_planner(
        provider,
        toolbox,
        brief,
        system=settings.system_prompt,
        model=settings.model,
        max_tokens=settings.max_tokens,
        max_turns=settings.max_turns,
        attempt=job.attempt,
        feedback=job.feedback,
        record=workspace.record,
        on_tool=workspace.on_line,
        should_stop=workspace.should_stop,
        context_limit=settings.context_limit,
    )
