"""Planning a goal in this process, for ``pd plan``: nothing runs, nothing merges.

The planner reads a throwaway detached worktree of the target head; the programs its
skills run get the run's sandbox, as a worker's planner would. Paid calls pass the
same permit machinery as a run's (``Metering`` answering a ``PermitLoop`` over an
in-process pipe), so the mission's budget and rate limits hold here too.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine.configs import provider_options
from orchestrator.engine.preflight import RunPlan, plan_payload
from orchestrator.errors import AttemptEnded, PdError, ProviderError
from orchestrator.limits.client import BudgetExhausted, MeteredProvider, PermitClient, estimate
from orchestrator.limits.meter import Metering
from orchestrator.limits.permit_thread import PermitLoop
from orchestrator.planning.producer import planner_toolbox, run_planner
from orchestrator.planning.taskplan import planner_skills
from orchestrator.providers import Provider, make_provider
from orchestrator.system.sandbox import Sandbox
from orchestrator.system.worktrees import WorktreeManager
from orchestrator.team.skills import load_registry
from orchestrator.team.tools import scrub_env

PLANNER = "planner"  # the worker id the permit desk books the calls to


@dataclass
class LocalPlan:
    tasks: list[dict[str, Any]]
    summary: str
    attempts: int
    spend: dict[str, Any] | None  # the permit desk's view; None when calls cost nothing


def plan_locally(plan: RunPlan, on_tool: Callable[[str], None] = lambda s: None) -> LocalPlan:
    """Run the producer's planning attempts here, up to the mission's ``max_attempts``.
    Raises ``PdError`` when no attempt produced a plan (or the budget is spent)."""
    step = plan.planning
    if step is None:
        raise PdError("this mission lists its tasks: there is nothing to plan")
    role = plan.roles[step.role]
    payload = plan_payload(plan, planner_skills(role, load_registry(plan.workspace)))
    model = plan.provider.models.get(step.role, "")
    limits = plan.mission.limits
    metering = Metering.for_run(
        plan.mission, plan.provider.name, plan.provider.prices, [], lambda kind, **data: None
    )
    feedback: list[str] = []
    with _worktree(plan) as root, _provider(plan, model, metering) as provider:
        for attempt in range(1, plan.mission.max_attempts + 1):
            toolbox = planner_toolbox(
                root, payload, scrub_env(os.environ), limits.command_timeout, limits.output_cap
            )
            toolbox.sandbox = Sandbox(plan.sandbox, root)  # the run's policy, as a worker's
            try:
                planned = run_planner(
                    provider,
                    toolbox,
                    payload,
                    system=role.system_prompt(),
                    model=model,
                    max_tokens=plan.mission.provider.max_tokens,
                    max_turns=limits.max_turns,
                    attempt=attempt,
                    feedback=feedback,
                    on_tool=on_tool,
                    context_limit=plan.provider.context_limit(model),
                )
            except BudgetExhausted:
                raise
            except (AttemptEnded, ProviderError) as exc:
                feedback.append(str(exc))
                continue
            return LocalPlan(planned.tasks, planned.summary, attempt, _settled(metering))
    raise PdError(f"planning failed after {len(feedback)} attempts: {feedback[-1]}")


def _settled(metering: Metering, timeout: float = 5.0) -> dict[str, Any] | None:
    """The desk's view once the last call's report has reached it (the permit thread
    reads it a moment after the call returned)."""
    deadline = time.monotonic() + timeout
    view = metering.view()
    while view is not None and view["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.01)
        view = metering.view()
    return view


@contextmanager
def _worktree(plan: RunPlan) -> Iterator[Path]:
    """A detached worktree of the target head, removed afterwards (no setup: read only)."""
    with tempfile.TemporaryDirectory(prefix="pd-plan-") as folder:
        trees = WorktreeManager(plan.repo, Path(folder))
        try:
            yield trees.prepare(PLANNER, base=plan.start_head, branch=None)
        finally:
            trees.remove_all()


@contextmanager
def _provider(plan: RunPlan, model: str, metering: Metering) -> Iterator[Provider]:
    """The planner's provider; metered (permit loop + ledger) when calls cost money."""
    inner = make_provider(**provider_options(plan, model).sdk_options())
    if metering.desk is None:
        yield inner
        return
    loop = PermitLoop(metering)
    ours, theirs = multiprocessing.Pipe()
    loop.start()
    loop.attach(PLANNER, plan.planning.role if plan.planning else "", theirs)
    try:
        yield MeteredProvider(inner, PermitClient(PLANNER, ours), estimate)
    finally:
        loop.stop()
        ours.close()
