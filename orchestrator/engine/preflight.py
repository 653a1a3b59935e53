"""Everything checked before a run creates anything, and the plan that results.

Each check raises a one-line ``BadInput`` naming the file, the field and the fix, so a
bad mission never leaves a run folder, a worktree or a branch behind. This module puts
the checks in order and assembles the ``RunPlan``; the checks of the team live in
``teamcheck``, those that ask git in ``repocheck``, the provider's in ``providercheck``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

from orchestrator.engine.providercheck import ProviderPlan, check_provider
from orchestrator.engine.repocheck import check_branch, check_context_files, check_gate, check_repo
from orchestrator.engine.teamcheck import (
    check_assignable,
    check_graph,
    check_planning,
    check_reviewers,
    check_roles,
    team_slots,
)
from orchestrator.errors import BadInput
from orchestrator.gate.runner import default_parallel
from orchestrator.planning.taskplan import PlanningStep, team_of
from orchestrator.spec.mission import Mission, ProviderConfig, load_mission
from orchestrator.system.gitutil import (
    current_branch,
)
from orchestrator.system.sandbox import Policy, SandboxUnavailable, make_policy
from orchestrator.system.targetlock import refuse_if_live
from orchestrator.tasks.taskgraph import TaskGraph
from orchestrator.team.roles import Role, load_roles


@dataclass
class RunPlan:
    """A mission resolved against the disk: absolute paths, roles, workers, graph."""

    mission: Mission
    mission_path: Path
    workspace: Path
    repo: Path
    target_branch: str
    start_head: str
    worktree_root: Path
    gate_command: str
    roles: dict[str, Role]
    workers: list[tuple[str, str]]
    graph: TaskGraph
    provider: ProviderPlan
    record: bool = False  # write every model exchange into a replayable cassette
    # A goal mission's planning step: the graph is empty until the producer's plan is in.
    planning: PlanningStep | None = None
    sandbox: Policy = field(default_factory=Policy)  # where agents' commands and the gate run
    # Why the gate runs ``gate_command`` when the mission named none ("pytest: …"); else "".
    gate_detected: str = ""
    gate_parallel: int = 1  # gates at once: the mission's gate.parallel, else the default

    def gates_line(self) -> str:
        """What ``pd validate`` and a run's first line say about parallel gates."""
        why = "gate.parallel" if self.mission.gate.parallel else "default: from the cores"
        plural = "s" if self.gate_parallel > 1 else ""
        return f"{self.gate_parallel} gate{plural} at once ({why})"


def build_plan(
    mission_path: Path,
    workspace: Path,
    repo_arg: str | None = None,
    workers: int | None = None,
    provider: str | None = None,
    worktrees: str | None = None,
    base_url: str | None = None,
    budget: Decimal | None = None,
    cassette: str | None = None,
    on_gate: Callable[[str], None] | None = None,
    gate_command: str | None = None,
) -> RunPlan:
    """Load and check a mission; raise ``BadInput`` at the first problem. The keyword
    arguments are the CLI's overrides of the mission's fields; ``on_gate`` hears which
    test command a mission without one gets, as soon as it is known (so ``pd validate``
    names it even when a later check fails). ``gate_command``: the one a resumed run
    started with, which stays its gate whatever the repository shows now."""
    mission = load_mission(mission_path)
    where = str(mission_path)
    if provider:
        mission.provider.name = _provider_name(provider)  # type: ignore[assignment]
    if budget is not None:
        if not budget.is_finite() or budget < 0:
            raise BadInput("--budget", f"{budget} is not a budget", "give dollars >= 0")
        mission.budget = budget
    if cassette:
        mission.provider.cassette = str(Path(cassette).expanduser().resolve())
    roles = load_roles(workspace)
    check_roles(mission, roles, where)
    graph = check_graph(mission, where)
    team = team_slots(mission, workers)
    check_assignable(mission, roles, team, where)
    planning = check_planning(mission, team, workers, where)
    check_reviewers(mission, [roles[role] for _, role in team], where)
    repo = check_repo(mission, mission_path, workspace, repo_arg)
    if live := mission.target_branch or current_branch(repo):
        refuse_if_live(repo, live, where)  # before the checkout checks: the true reason
    branch, head = check_branch(mission, repo, where)
    check_context_files(mission, repo, branch, head, where)
    gate = check_gate(mission, repo, head, where, gate_command)
    if gate.reason and on_gate is not None:
        on_gate(gate.line())
    provider_plan = check_provider(mission, mission_path, roles, base_url)
    root = _check_worktrees(worktrees, mission, workspace, where)
    return RunPlan(
        mission=mission,
        mission_path=mission_path.resolve(),
        workspace=workspace,
        repo=repo,
        target_branch=branch,
        start_head=head,
        worktree_root=root,
        gate_command=gate.command,
        gate_detected=gate.reason,
        roles=roles,
        workers=team,
        graph=graph,
        provider=provider_plan,
        planning=planning,
        sandbox=_check_sandbox(mission, where, [repo, root, workspace / ".pd"]),
        gate_parallel=mission.gate.parallel or default_parallel(len(team)),
    )


def _provider_name(name: str) -> str:
    known = get_args(ProviderConfig.model_fields["name"].annotation)
    if name not in known:
        raise BadInput(
            "--provider", f"unknown provider '{name}'", f"use one of: {', '.join(known)}"
        )
    return name


def _check_worktrees(arg: str | None, mission: Mission, workspace: Path, where: str) -> Path:
    """The worktrees' folder (relative paths are from the workspace): it may not exist
    yet, but the nearest existing path on the way must be a folder."""
    root = Path(arg or mission.worktrees or workspace / "worktrees").expanduser()
    root = (root if root.is_absolute() else workspace / root).resolve()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        place, field = ("--worktrees", None) if arg else (where, "worktrees")
        raise BadInput(
            place,
            f"{existing} is not a folder, so worktrees cannot go in {root}",
            "point it at a folder (it is created if missing)",
            field,
        )
    return root


def _check_sandbox(mission: Mission, where: str, hidden: list[Path]) -> Policy:
    """The sandbox the run's commands get; none to be had is an error unless the mission
    turns it off."""
    config = mission.sandbox
    try:
        return make_policy(
            config.mode,
            config.network,
            config.pass_env,
            config.read_only,
            config.read_write,
            hidden,
        )
    except SandboxUnavailable as exc:
        fix = 'install bubblewrap, or set "sandbox": "off" to run commands unconfined'
        raise BadInput(where, str(exc), fix, "sandbox") from None


def plan_payload(plan: RunPlan, skills: Sequence[str]) -> dict[str, Any]:
    """What a planning attempt needs: the goal, the team, the draft tasks, the skills."""
    mission = plan.mission
    return {
        "mission": mission.name,
        "goal": mission.goal or "",
        "description": mission.description,
        "team": [r.__dict__ for r in team_of(plan.workers, plan.roles)],
        "draft": [t.model_dump(mode="json", exclude_defaults=True) for t in mission.tasks],
        "max_attempts": mission.max_attempts,
        "gate": plan.gate_command,
        "skills": list(skills),
        "workspace": str(plan.workspace),
    }
